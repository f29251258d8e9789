"""The README's configuration table lists every setting."""

from pathlib import Path

from enricher.config import Settings

ROOT = Path(__file__).parents[2]


def _dotted(values: dict[str, object], prefix: str = "") -> list[str]:
    names = []
    for key, value in values.items():
        if isinstance(value, dict) and value:  # a section (maps that are values are empty)
            names += _dotted(value, f"{prefix}{key}.")
        else:
            names.append(prefix + key)
    return names


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in _dotted(Settings().model_dump(mode="json")):
        env = "ENRICHER_" + name.upper().replace(".", "__")
        assert f"| `{name}` |" in readme and f"`{env}`" in readme, name
