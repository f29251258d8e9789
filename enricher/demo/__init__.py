"""``enricher demo``: a simulated chat backend, the real proxy in front of it, and a page.

The page shows two inboxes side by side, both built with the seed's own frontend handlers:
one connected straight to the simulated backend, one through enricher. Modules:

- :mod:`.people`: customer names, phone numbers and chat lines (pure)
- :mod:`.store`: the simulated backend's rooms and messages, and their payloads (pure)
- :mod:`.script`: who writes next and in what disorder, as steps (pure, seeded)
- :mod:`.stats`: enricher's numbers for the page, read from its metrics (pure)
- :mod:`.simulator`: the backend: python-socketio events and REST, running the script
- :mod:`.page`: the page, ``/config.json`` and ``/api/stats``
- :mod:`.run`: the composition root of the demo
"""
