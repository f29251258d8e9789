"""Settings: the documented defaults, the order of sources, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from enricher.config import ConfigError, Settings, load_settings

DEFAULT_YAML = Path(__file__).parents[2] / "config" / "default.yaml"


def test_default_yaml_documents_every_setting_with_its_default() -> None:
    documented = yaml.safe_load(DEFAULT_YAML.read_text())
    assert documented == Settings().model_dump(mode="json")


def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "enricher.yaml"
    config.write_text(
        "upstream:\n  url: http://file:1\n  headers: {X-Token: t}\nhold_timeout: 1.5\n"
        "listen: 127.0.0.1:1111\nclient_events: [echo]\n"
    )
    settings = load_settings(config)
    assert settings.upstream.url == "http://file:1" and settings.hold_timeout == 1.5
    assert settings.client_events == ["echo"] and settings.upstream.headers == {"X-Token": "t"}
    monkeypatch.setenv("ENRICHER_UPSTREAM__URL", "http://env:2")
    monkeypatch.setenv("ENRICHER_HOLD_TIMEOUT", "2.5")
    settings = load_settings(config)
    assert settings.upstream.url == "http://env:2" and settings.hold_timeout == 2.5
    assert settings.upstream.headers == {"X-Token": "t"}  # the rest of the section stays
    settings = load_settings(config, **{"upstream.url": "http://flag:3", "listen": "0.0.0.0:3333"})
    assert settings.upstream.url == "http://flag:3" and settings.listen == "0.0.0.0:3333"
    assert settings.rest_url == "http://flag:3"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"upstream.url": "localhost:3000"}, "upstream.url"),
        ({"listen": "8080"}, "listen"),
        ({"new_room_mode": "sometimes"}, "new_room_mode"),
        ({"hold_timeout": -1}, "hold_timeout"),
        ({"http.url": "http://svc:s3cret@backend:3000"}, "http.url"),  # sent to everyone
        ({"http.paths": ["rooms"]}, "http.paths"),
        ({"http.trusted_proxies": ["10.0.0.0/33"]}, "http.trusted_proxies"),
        ({"http.auth": "jwt"}, "http.auth"),
    ],
)
def test_bad_settings_name_the_setting(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(None, **overrides)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enricher", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_cli_exits_2_with_one_line_on_a_bad_setting(tmp_path: Path) -> None:
    result = run_cli("serve", "--upstream", "not a url")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("enricher: bad setting: upstream.url:")
    result = run_cli("serve", env={"ENRICHER_HOLD_TIMEOUT": "soon"})
    assert result.returncode == 2 and "hold_timeout" in result.stderr
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("upstream: [unclosed\n")
    result = run_cli("serve", "--config", str(bad_yaml))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    result = run_cli("serve", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "missing.yaml" in result.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("hold_timout: 3\n")
    result = run_cli("serve", "--config", str(unknown))
    assert result.returncode == 2 and "hold_timout" in result.stderr


def test_the_former_mode_setting_still_reads() -> None:
    assert load_settings(None).upstream.mode == "transparent"
    per_browser = load_settings(None, client_event_upstream="per_browser")
    assert per_browser.upstream.mode == "transparent"
    assert load_settings(None, client_event_upstream="shared").upstream.mode == "shared"
    explicit = {"client_event_upstream": "shared", "upstream.mode": "transparent"}
    assert load_settings(None, **explicit).upstream.mode == "transparent"


def test_shared_events_across_replicas_need_shared_mode() -> None:
    with pytest.raises(ConfigError, match=r"recovery\.store redis needs upstream\.mode shared"):
        load_settings(None, **{"recovery.store": "redis"})
    assert load_settings(None, **{"recovery.store": "redis", "upstream.mode": "shared"})
