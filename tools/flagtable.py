"""Markdown tables of every flag, rendered from the daemons' own argparse parsers.

    python -m tools.flagtable            print the tables
    python -m tools.flagtable --write    replace the tables in README.md between the marker comments
    python -m tools.flagtable --check    exit 1 when README.md's tables are stale

README.md holds each table between ``<!-- flags:NAME:start -->`` and ``<!-- flags:NAME:end -->``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
REGENERATE = "python -m tools.flagtable --write"


def _forwarder() -> argparse.ArgumentParser:
    from forwarder.cli import build_parser

    return build_parser()


def _tailer() -> argparse.ArgumentParser:
    from tailer.cli import build_parser

    return build_parser()


def _kubectl_audit() -> argparse.ArgumentParser:
    from kubectl_audit.cli import build_parser

    return build_parser()


# marker name -> parser factory; the order is the README's order
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "forwarder": _forwarder,
    "tailer": _tailer,
    "kubectl-audit": _kubectl_audit,
}


@contextlib.contextmanager
def _clean_environment() -> Iterator[None]:
    """EnvParser takes defaults from AUDIT_* variables: hide them so the table shows the code's defaults."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("AUDIT_")}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def _size(value: int) -> str:
    for suffix, factor in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


def _duration(value: float) -> str:
    """As the help texts say it: the largest unit that is a whole number (30d, 5m, 10s, 200ms)."""
    for suffix, factor in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if value >= factor and value % factor == 0:
            return f"{value / factor:g}{suffix}"
    if value and value < 1:
        return f"{round(value * 1000)}ms"
    return f"{value:g}s"


def _default(action: argparse.Action) -> str:
    from kube_audit.runtime.flags import parse_duration, parse_limit, parse_size

    value = action.default
    if value is None or value == [] or value is argparse.SUPPRESS:
        return ""
    if value == "":
        return '""'
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):  # host:port
        text = f"{value[0]}:{value[1]}"
    elif isinstance(value, tuple):  # a comma-separated list flag
        text = ",".join(str(v) for v in value)
    elif action.type is parse_limit and value == 0:
        text = "unlimited"
    elif action.type in (parse_size, parse_limit) and isinstance(value, int):
        text = _size(value)
    elif action.type is parse_duration and isinstance(value, int | float):
        text = _duration(value)
    else:
        text = str(value)
    return text.replace(socket.gethostname(), "<host>")  # the machine that renders the table is not yours


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _actions(parser: argparse.ArgumentParser) -> list[tuple[argparse.Action, str]]:
    """Each action with a note; a parser with commands: one row per command, then the commands' flags
    (each once, with the commands that take it unless all do)."""
    out: list[tuple[argparse.Action, str]] = []
    for action in parser._actions:  # argparse has no public iterator over its actions
        if not isinstance(action, argparse._SubParsersAction):
            out.append((action, ""))
            continue
        seen: dict[tuple[str, ...], tuple[argparse.Action, list[str]]] = {}
        for choice in action._choices_actions:
            out.append((argparse.Action([], f"command {choice.dest}", help=choice.help), ""))
        for name, sub in action.choices.items():
            for a in sub._actions:
                key = tuple(a.option_strings) or (a.dest,)
                seen.setdefault(key, (a, []))[1].append(name)
        for a, names in seen.values():
            out.append((a, "" if len(names) == len(action.choices) else f" ({', '.join(names)})"))
    return out


def render(parser: argparse.ArgumentParser) -> str:
    env_name = getattr(parser, "env_name", None)  # EnvParser: every long flag has an env var
    if env_name:
        rows = ["| flag | env | default | meaning |", "|---|---|---|---|"]
    else:
        rows = ["| flag | default | meaning |", "|---|---|---|"]
    for action, note in _actions(parser):
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue  # hidden flags are not documented here
        if action.option_strings:
            longs = [o for o in action.option_strings if o.startswith("--")]
            flag = ", ".join(f"`{o}`" for o in action.option_strings)
            env = f"`{env_name(longs[0])}`" if env_name and longs else ""
        elif action.dest.startswith("command "):
            flag, env = f"`{action.dest.removeprefix('command ')}`", ""
        else:
            flag, env = f"`<{action.dest}>`", ""
        default = _default(action)
        meaning = re.sub(r"\s*\[env [A-Z0-9_]+\]$", "", action.help or "")
        meaning = meaning.removesuffix(f" (default {default})")  # the default has its own column
        if action.choices:
            meaning += f"; one of {', '.join(map(str, action.choices))}"
        if env and isinstance(action, argparse._AppendAction):
            meaning += "; the env var takes a comma-separated list"
        meaning += note
        cells = [flag, env] if env_name else [flag]
        cells += [f"`{default}`" if default else "", _cell(meaning)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def tables() -> dict[str, str]:
    with _clean_environment():
        return {name: render(factory()) for name, factory in PARSERS.items()}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- flags:{re.escape(name)}:start -->\n)(.*?)(<!-- flags:{re.escape(name)}:end -->)",
                      re.DOTALL)


def update(text: str, rendered: dict[str, str]) -> str:
    """The README text with each marked block replaced; a missing marker pair is an error."""
    for name, table in rendered.items():
        pattern = _block(name)
        if not pattern.search(text):
            raise ValueError(f"README.md has no <!-- flags:{name}:start --> ... <!-- flags:{name}:end --> block")
        text = pattern.sub(lambda m, t=table: m.group(1) + t + m.group(3), text)
    return text


def stale(readme: Path = README) -> list[str]:
    """Names of the README tables that differ from what the code renders."""
    text = readme.read_text(encoding="utf-8")
    rendered = tables()
    fresh = update(text, rendered)
    return [name for name in rendered if _block(name).search(text).group(2) != _block(name).search(fresh).group(2)]  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.flagtable", description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="update README.md in place")
    mode.add_argument("--check", action="store_true", help="exit 1 when README.md's tables are stale")
    a = p.parse_args(argv)
    if a.write:
        README.write_text(update(README.read_text(encoding="utf-8"), tables()), encoding="utf-8")
        return 0
    if a.check:
        names = stale()
        if names:
            sys.stderr.write(f"README.md flag tables are stale ({', '.join(names)}): run {REGENERATE}\n")
            return 1
        return 0
    for name, table in tables().items():
        sys.stdout.write(f"### {name}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
