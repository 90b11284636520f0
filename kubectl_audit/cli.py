"""kubectl audit: the plugin's one parser (installed as ``kubectl-audit`` on PATH, so ``kubectl audit``).

    kubectl audit RESOURCE NAME [-n NS]             short for ``kubectl audit show``: the object's audit
                                                    ConfigMap (configmap.py, through the kubeconfig)
    kubectl audit NAME [-n NS | -A]                 short for ``kubectl audit history`` of the one object
                                                    of that name the audit API knows
    kubectl audit history|diff|bisect|watch|sources the audit API (api.py, sources.py: through the kubeconfig's
                                                    apiserver, or a tailer's own URL with --server)
    kubectl audit verify [--source S] [--since T]   the stored chain and events re-checked (verify.py)

kubectl's conventions: the namespace is ``-n`` or else the kubeconfig context's (else "default"), flags go
before or after the command, every error is one line on stderr with exit status 1. Imports are lazy: this
module needs only argparse, so ``--help`` is quick; the commands load httpx or the kubeconfig when run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

API_COMMANDS = ("history", "diff", "bisect", "watch", "sources")
COMMANDS = ("show", *API_COMMANDS, "verify")


class CommandError(Exception):
    """Printed as one line, exit status 1."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see 'kubectl audit --help')\n")
        raise SystemExit(1)  # like kubectl: 1 on any error, usage included


def _common(outputs: tuple[str, ...] = ("table", "wide", "json", "yaml")) -> Parser:
    p = Parser(add_help=False)
    p.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's, else default)")
    p.add_argument("-o", "--output", choices=outputs, default="table",
                   help="output format (wide: with each item's CLUSTER and SOURCE)")
    p.add_argument("--kubeconfig", help="path to the kubeconfig file")
    p.add_argument("--context", help="the kubeconfig context to use")
    return p


def _api() -> Parser:
    p = Parser(add_help=False)
    p.add_argument("-A", "--all-namespaces", action="store_true", help="all namespaces (cluster-wide)")
    p.add_argument("--server", help="a tailer's audit API URL, standalone (default: through the kubeconfig's "
                   "apiserver) [env KUBECTL_AUDIT_SERVER]")
    p.add_argument("--token", help="bearer token (default: the kubeconfig's credentials; with --server "
                   "env KUBECTL_AUDIT_TOKEN)")
    p.add_argument("--token-file", help="file holding the bearer token")
    p.add_argument("--cluster-scoped", action="store_true", help="the object is cluster-scoped")
    p.add_argument("--request-timeout", type=float, default=30, help="seconds per request (default 30)")
    p.add_argument("--cluster", help="only events from this cluster (its forwarder's --cluster; \"\" for none); "
                   "needed for an object whose events came from several clusters. Not kubectl's --cluster "
                   "(the kubeconfig's): use --context for that")
    p.add_argument("--source", help="only events from this forwarder (its --source-name)")
    return p


def _filters(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--since", help=f"only {what} newer than this: a duration (1h, 30m) or RFC 3339 time")
    p.add_argument("--user", help=f"only {what} by this user")
    p.add_argument("--verb", help=f"only {what} with this verb (create, update, patch, delete, ...)")


def build_parser() -> argparse.ArgumentParser:
    common, api = _common(), _api()
    p = Parser(prog="kubectl audit", description="Who changed what in the cluster, from kube-audit-forwarder: "
               "an object's audit ConfigMap, or the tailer's audit API.",
               epilog="kubectl audit RESOURCE NAME is short for kubectl audit show RESOURCE NAME; kubectl audit "
               "NAME for kubectl audit history of the one recorded object of that name. The audit API is reached "
               "through the kubeconfig's apiserver (an aggregated API), or with --server a tailer directly.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    show = sub.add_parser("show", parents=[common], help="the audit ConfigMap entries of a tracked object "
                          "(the default)", description="The audit ConfigMap entries of a tracked object.")
    show.add_argument("resource", help="resource type like kubectl: databases, databases.example.com, db")
    show.add_argument("name", help="object name")
    _filters(show, "entries")
    show.add_argument("--api-version", help="group/version of the resource, skips discovery")
    show.add_argument("--cluster-scope-namespace", default="kube-audit",
                      help="where the tailer keeps ConfigMaps of cluster-scoped objects (default kube-audit)")
    for name, text in (("history", "audit events, or an object's versions (with RESOURCE NAME)"),
                       ("watch", "audit events as they come")):
        s = sub.add_parser(name, parents=[common, api], help=text, description=text[0].upper() + text[1:] + ".")
        s.add_argument("resource", nargs="?", help="resource type, e.g. deployments.apps")
        s.add_argument("name", nargs="?", help="object name")
        _filters(s, "events")
        if name == "watch":
            s.add_argument("--resource-version", help="resume after this store sequence")
        else:
            s.add_argument("--limit", type=int, default=500, help="events per page (default 500)")
            s.add_argument("--by-name", action="store_true", help=argparse.SUPPRESS)  # kubectl audit NAME
        s.set_defaults(by_name=False)
    d = sub.add_parser("diff", parents=[common, api], help="what changed between two versions of an object")
    d.add_argument("resource")
    d.add_argument("name")
    d.add_argument("--from", dest="start", type=int, help="version (default: the one before --to)")
    d.add_argument("--to", dest="end", type=int, help="version (default: the last)")
    d.add_argument("--field", default="", help="dotted path, e.g. spec.template")
    b = sub.add_parser("bisect", parents=[common, api], help="the first version where a field had a value")
    b.add_argument("resource")
    b.add_argument("name")
    b.add_argument("--field", required=True, help="dotted path, e.g. spec.replicas")
    b.add_argument("--value", required=True, help="JSON value or string")
    v = sub.add_parser("verify", parents=[common, api], help="re-check the stored chunk chain and events "
                       "(tamper evidence); exit 1 when a row was altered, deleted or inserted, or a chain breaks")
    v.add_argument("--since", help="only chunks the tailer received since: a duration (1h) or RFC 3339 time")
    for parser in (d, b, v):
        parser.set_defaults(by_name=False)
    s = sub.add_parser("sources", parents=[common, api],
                       help="the forwarders the tailer hears from: state, last seen, lag, gaps",
                       description="The forwarders (sources) the tailer hears from: ok, lagging, silent or gap. "
                                   "--cluster: only that cluster's; --source: only that one.")
    s.add_argument("name", nargs="?", help="one source")
    s.set_defaults(by_name=False, resource=None)
    return p


def _takes_value(parser: argparse.ArgumentParser) -> set[str]:
    out: set[str] = set()
    for action in parser._actions:  # argparse has no public iterator over its actions
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out |= _takes_value(sub)
        elif action.nargs != 0:
            out.update(action.option_strings)
    return out


def normalize(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """The command first (kubectl takes flags anywhere); no command: ``history --by-name`` for one word
    (``kubectl audit NAME``), else ``show`` (``kubectl audit RESOURCE NAME``)."""
    values = _takes_value(parser)
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        i += 2 if word in values else 1
    if i >= len(args):
        return args  # no command: --help, or a usage error
    if args[i] in COMMANDS:
        return [args[i], *args[:i], *args[i + 1:]]
    if _positionals(args, values) == 1:
        return ["history", "--by-name", *args]  # kubectl audit NAME
    return ["show", *args]


def _positionals(args: list[str], values: set[str]) -> int:
    count, i = 0, 0
    while i < len(args):
        word = args[i]
        if word == "--":
            return count + len(args) - i - 1
        if word.startswith("-") and word != "-":
            i += 2 if word in values else 1
            continue
        count, i = count + 1, i + 1
    return count


def namespace(args: argparse.Namespace) -> str:
    """``-n``, else the kubeconfig context's namespace, else "default"."""
    if args.namespace:
        return str(args.namespace)
    from kube_audit.errors import KubeUnconfigured
    from kube_audit.kube.blocking import context_namespace

    try:
        return context_namespace(args.kubeconfig, args.context) or "default"
    except KubeUnconfigured as exc:
        raise CommandError(f"cannot read the kubeconfig: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(normalize(parser, list(sys.argv[1:] if argv is None else argv)))
    if args.command is None:
        parser.error("name a command, or RESOURCE NAME")
    run: Any
    if args.command == "show":
        from kubectl_audit.configmap import run
    elif args.command == "verify":
        from kubectl_audit.verify import run
    else:
        if args.namespace and args.all_namespaces:
            parser.error("-n and -A go separately")
        from kubectl_audit.api import run
    try:
        return int(run(args))
    except CommandError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130 if args.command != "watch" else 0
    except BrokenPipeError:  # | head
        return 0


if __name__ == "__main__":
    # run the imported module, not this __main__ copy: the commands raise kubectl_audit.cli.CommandError,
    # which is another class than __main__.CommandError
    from kubectl_audit.cli import main as imported_main

    sys.exit(imported_main())
