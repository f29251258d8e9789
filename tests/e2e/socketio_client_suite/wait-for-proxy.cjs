// Not part of the vendored suite (see SOURCE.md): a root hook that test_conformance.py adds
// with a second `--require` when the suite runs through enricher. test/support/hooks.ts
// starts the suite's own server (port 3210) in its beforeAll; this beforeAll, registered
// after it, then waits until the proxy in front of that server says it is connected to it
// (WAIT_FOR_READY_URL: enricher's admin /readyz), so that the first tests do not race the
// proxy's connection to a backend that only came up a moment ago. Without the variable it
// does nothing.
const url = process.env.WAIT_FOR_READY_URL;
const limit = Number(process.env.WAIT_FOR_READY_TIMEOUT_MS || 20000);

exports.mochaHooks = {
  async beforeAll() {
    if (!url) return;
    this.timeout(limit + 1000);
    const deadline = Date.now() + limit;
    let last = "no answer yet";
    while (Date.now() < deadline) {
      try {
        const res = await fetch(url);
        last = `${res.status} ${await res.text()}`;
        if (res.ok) return;
      } catch (err) {
        last = String(err);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`${url} did not answer 200 within ${limit} ms (last: ${last})`);
  },
};
