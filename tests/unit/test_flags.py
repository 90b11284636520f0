"""kube_audit.runtime.flags: booleans as switches or values, sizes and durations that refuse inf and nan."""

from __future__ import annotations

import argparse

import pytest

from kube_audit.runtime.flags import BoolFlag, parse_duration, parse_limit, parse_size
from tools.flagtable import PARSERS


def bool_flags() -> list[tuple[str, str, bool]]:
    """(parser name, long flag, default) of every boolean flag of the daemons."""
    out = []
    for name, factory in PARSERS.items():
        for action in factory()._actions:
            if isinstance(action, BoolFlag):
                out.append((name, action.option_strings[0], action.default))
    return out


BOOL_FLAGS = bool_flags()
REQUIRED = {"forwarder": ["--tailer", "t:1"], "tailer": []}


def test_the_daemons_have_boolean_flags() -> None:
    assert {("forwarder", "--read-from-head"), ("forwarder", "--compress"), ("tailer", "--stdout")} <= {
        (n, f) for n, f, _ in BOOL_FLAGS}


@pytest.mark.parametrize(("name", "flag", "default"), BOOL_FLAGS, ids=[f"{n}{f}" for n, f, _ in BOOL_FLAGS])
def test_every_boolean_flag_is_a_switch_and_takes_a_value(name: str, flag: str, default: bool) -> None:
    parser = PARSERS[name]()
    dest = flag[2:].replace("-", "_")
    base = REQUIRED[name]

    def parsed(*args: str) -> bool:
        return bool(getattr(parser.parse_args([*base, *args]), dest))

    assert parsed() is default
    assert parsed(flag) is True
    assert parsed("--no-" + flag[2:]) is False
    assert parsed(flag, "false") is False and parsed(flag, "yes") is True
    assert parsed(flag + "=0") is False and parsed(flag + "=true") is True
    assert parsed(flag, "--no-" + flag[2:]) is False  # the last one wins, as argparse does
    # a bare switch followed by another flag does not swallow it
    assert parsed(flag, "--log-level", "debug") is True


@pytest.mark.parametrize("argv", [["--read-from-head", "maybe"], ["--no-read-from-head", "true"]])
def test_boolean_flag_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        PARSERS["forwarder"]().parse_args(["--tailer", "t:1", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--read-from-head" in err


def test_boolean_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_FORWARDER_READ_FROM_HEAD", "true")
    parser = PARSERS["forwarder"]()
    assert parser.parse_args(["--tailer", "t:1"]).read_from_head is True
    assert parser.parse_args(["--tailer", "t:1", "--no-read-from-head"]).read_from_head is False


def test_help_shows_both_forms() -> None:
    text = PARSERS["forwarder"]().format_help()
    assert "--read-from-head [BOOL], --no-read-from-head [BOOL]" in text


@pytest.mark.parametrize(("text", "expected"), [("0", 0), ("unlimited", 0), ("10Gi", 10 * 1024**3), ("1.5Ki", 1536),
                                                ("2T", 2 * 1000**4)])
def test_limits(text: str, expected: int) -> None:
    assert parse_limit(text) == expected


@pytest.mark.parametrize("parse", [parse_size, parse_limit, parse_duration])
@pytest.mark.parametrize("text", ["inf", "nan", "-inf", "NaN", "1e400"])
def test_inf_and_nan_are_refused(parse: object, text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="finite number"):
        parse(text)  # type: ignore[operator]


def test_sizes_and_durations() -> None:
    assert parse_size("64Mi") == 64 * 1024**2 and parse_duration("30d") == 30 * 86400
    with pytest.raises(argparse.ArgumentTypeError, match="positive"):
        parse_size("0")
    with pytest.raises(argparse.ArgumentTypeError, match="negative"):
        parse_limit("-1")
    with pytest.raises(argparse.ArgumentTypeError, match="like 5s"):
        parse_duration("soon")


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("unlimited", 0), ("10Gi", 10 * 1024**3)])
def test_tailer_retention_bytes(value: str, expected: int) -> None:
    assert PARSERS["tailer"]().parse_args(["--retention-bytes", value]).retention_bytes == expected


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_tailer_retention_refuses_inf_and_nan(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--retention-bytes", "--retention-age"):
        with pytest.raises(SystemExit) as exc:
            PARSERS["tailer"]().parse_args([flag, value])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "finite number" in err and flag in err
