"""argparse with an environment fallback per flag and one-line errors (exit status 2)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


class BoolFlag(argparse.Action):
    """A boolean flag as users type it: ``--flag``, ``--no-flag``, or ``--flag true|false|yes|no|1|0``."""

    def __init__(self, option_strings: Sequence[str], dest: str, default: Any = False, help: str | None = None,
                 **_: Any) -> None:
        negatives = [f"--no-{o[2:]}" for o in option_strings if o.startswith("--")]
        super().__init__([*option_strings, *negatives], dest, nargs="?", default=default, help=help,
                         metavar="BOOL")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        negative = bool(option_string and option_string.startswith("--no-"))
        if values is None:
            setattr(namespace, self.dest, not negative)
            return
        if negative:
            raise argparse.ArgumentError(self, f"{option_string} takes no value (got {values!r})")
        try:
            setattr(namespace, self.dest, parse_bool(str(values)))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None


def parse_hostport(value: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = default_host, value
    host = host.strip("[]") or default_host
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected host:port, got {value!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range in {value!r}")
    return host, number


def _number(text: str, value: str, example: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {example}, got {value!r}") from None
    if not math.isfinite(number):  # float() takes inf and nan; neither is a size or a duration
        raise argparse.ArgumentTypeError(f"expected a finite number like {example.split()[-1]}, got {value!r}")
    return number


def _bytes(value: str) -> int:
    units = {"ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4, "k": 1000, "m": 1000**2, "g": 1000**3,
             "t": 1000**4}
    text = value.strip().lower().removesuffix("b")
    for suffix, factor in units.items():  # noqa: B007 - factor is used after the break
        if text.endswith(suffix):
            number = text[: -len(suffix)]
            break
    else:
        number, factor = text, 1
    result = int(_number(number, value, "a size like 64Mi") * factor)
    if result < 0:
        raise argparse.ArgumentTypeError(f"size must not be negative, got {value!r}")
    return result


def parse_size(value: str) -> int:
    """Bytes with an optional Ki/Mi/Gi/Ti (or K/M/G/T) suffix; positive."""
    result = _bytes(value)
    if result <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {value!r}")
    return result


def parse_limit(value: str) -> int:
    """A size limit like parse_size, where ``0`` or ``unlimited`` means no limit (returned as 0)."""
    if value.strip().lower() in ("unlimited", "none"):
        return 0
    return _bytes(value)


def parse_duration(value: str) -> float:
    """Seconds, or a number with ms/s/m/h/d."""
    text = value.strip().lower()
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0)):
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)], factor
            break
    else:
        scale = 1.0
    result = _number(text, value, "a duration like 5s") * scale
    if result < 0:
        raise argparse.ArgumentTypeError(f"duration must not be negative, got {value!r}")
    return result


class EnvParser(argparse.ArgumentParser):
    """Every long option ``--some-flag`` also reads ``<PREFIX>SOME_FLAG`` when not given."""

    def __init__(self, *args: Any, env_prefix: str, **kwargs: Any) -> None:
        self.env_prefix = env_prefix
        super().__init__(*args, **kwargs)

    def env_name(self, flag: str) -> str:
        return self.env_prefix + flag.lstrip("-").upper().replace("-", "_")

    def add_argument(self, *names: Any, **kwargs: Any) -> argparse.Action:
        return super().add_argument(*names, **self._with_env(names, kwargs))

    def add_argument_group(self, *args: Any, **kwargs: Any) -> argparse._ArgumentGroup:
        group = super().add_argument_group(*args, **kwargs)
        plain = group.add_argument

        def add(*names: Any, **kw: Any) -> argparse.Action:
            return plain(*names, **self._with_env(names, kw))

        group.add_argument = add  # type: ignore[method-assign]
        return group

    def _with_env(self, names: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        long = next((n for n in names if isinstance(n, str) and n.startswith("--")), None)
        if long is None or long == "--help":
            return kwargs
        env = self.env_name(long)
        kwargs["help"] = f"{kwargs.get('help', '')} [env {env}]".strip()
        raw = os.environ.get(env)
        if kwargs.get("type") is parse_bool:  # a switch as well as a value: --flag, --no-flag, --flag false
            kwargs.pop("type")
            kwargs.pop("metavar", None)
            kwargs["action"] = BoolFlag
            if raw is not None:
                try:
                    kwargs["default"] = parse_bool(raw)
                except argparse.ArgumentTypeError as exc:
                    self.error(f"{env}: {exc}")
            return kwargs
        if raw is None:
            return kwargs
        action = kwargs.get("action")
        try:
            if action == "append":
                kwargs["default"] = [v for v in raw.split(",") if v]
            elif action == "store_true":
                kwargs["default"] = parse_bool(raw)
            else:
                kwargs["default"] = kwargs.get("type", str)(raw)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            self.error(f"{env}: {exc}")
        return kwargs

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def read_secret(value: str | None, path: str | None, what: str) -> str | None:
    """A secret given inline or as a file (trailing newline stripped)."""
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"cannot read {what} file {path}: {exc.strerror}") from exc
    return value
