"""The README stays true: its topic table is the registry, its ports are the defaults."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from trailerlink_events.topics import registry

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_topic_table_matches_the_registry() -> None:
    rows = re.findall(
        r"^\| `(trailerlink\.[a-z.\-0-9]+)` \| (\w+) \| [^|]+ \| [^|]+ \| (\d+) \|",
        README,
        flags=re.M,
    )
    documented = {name: (site, int(partitions)) for name, site, partitions in rows}
    actual = {t.name: (t.site, t.partitions) for t in registry().values()}
    assert documented == actual


def test_service_ports_match_their_settings() -> None:
    rows = re.findall(r"^\| `trailerlink-(\w+)` \| \w+ \| (\d+) \|", README, flags=re.M)
    assert len(rows) == 6
    for service, port in rows:
        main = importlib.import_module(f"trailerlink_{service}.main")
        settings_cls = next(
            v for k, v in vars(main).items() if k.endswith("Settings") and k != "ServiceSettings"
        )
        assert settings_cls.model_fields["http_port"].default == int(port), service


def test_readme_names_both_commands() -> None:
    assert "make demo" in README and "make test" in README
