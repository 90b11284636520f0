"""README.md's flag tables are rendered from the parsers; a stale table fails with the command that fixes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import flagtable


def test_readme_flag_tables_are_current() -> None:
    stale = flagtable.stale()
    assert stale == [], f"README.md flag tables are stale ({', '.join(stale)}); regenerate: {flagtable.REGENERATE}"


def test_every_flag_of_every_parser_is_in_its_table() -> None:
    for name, table in flagtable.tables().items():
        parser = flagtable.PARSERS[name]()
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in table, (name, option)


def test_env_var_column_names_what_the_parser_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from forwarder.cli import build_parser

    row = next(r for r in flagtable.tables()["forwarder"].splitlines() if r.startswith("| `--chunk-events`"))
    assert "`AUDIT_FORWARDER_CHUNK_EVENTS` | `1000` |" in row
    monkeypatch.setenv("AUDIT_FORWARDER_CHUNK_EVENTS", "7")
    assert build_parser().parse_args(["--tailer", "t:1"]).chunk_events == 7
    # the environment of whoever renders the table does not leak into it
    assert "`AUDIT_FORWARDER_CHUNK_EVENTS` | `1000` |" in flagtable.tables()["forwarder"]


def test_write_replaces_only_the_marked_blocks(tmp_path: Path) -> None:
    text = "intro\n<!-- flags:tailer:start -->\nold\n<!-- flags:tailer:end -->\noutro\n"
    out = flagtable.update(text, {"tailer": "| new |\n"})
    assert out == "intro\n<!-- flags:tailer:start -->\n| new |\n<!-- flags:tailer:end -->\noutro\n"
    with pytest.raises(ValueError, match="flags:forwarder:start"):
        flagtable.update(text, {"forwarder": "x\n"})


def test_defaults_read_as_help_says_them() -> None:
    """`--help` says "(default 30d)"; the table says 30d, not 2.592e+06s (sizes: 0 is "unlimited", not 0Gi)."""
    import re

    for name, factory in flagtable.PARSERS.items():
        for action in factory()._actions:
            said = re.search(r"\(default ([^\s;,)]+)", action.help or "")
            if said and action.default is not None:
                assert flagtable._default(action) == said.group(1).rstrip(":"), (name, action.option_strings, said.group(1))
    assert flagtable._duration(30 * 86400.0) == "30d" and flagtable._duration(300.0) == "5m"
    assert flagtable._duration(0.2) == "200ms" and flagtable._duration(90.0) == "90s"
