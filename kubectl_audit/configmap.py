"""kubectl audit [show] RESOURCE NAME: the object's audit ConfigMap as a table, JSON or YAML.

Finds the ConfigMap through the annotation the tailer put on the object, so it needs nothing but read
access to the object and the ConfigMap. Every API call goes through kube_audit/kube/. The parser is
kubectl_audit/cli.py.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from kube_audit.contract import ANNOTATION, decode_entries
from kube_audit.errors import KubeError, KubeUnconfigured, NotFound
from kube_audit.kube.blocking import Kube
from kubectl_audit.cli import CommandError
from kubectl_audit.printer import dump, table

COLUMNS = ("TIME", "USER", "VERB", "CHANGE")


def _when(text: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _short_time(entry: dict[str, Any]) -> str:
    when = _when(entry.get("time", ""))
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else str(entry.get("time", ""))


def cutoff(since: str | None, now: datetime | None = None) -> datetime | None:
    """``--since``: a duration back from now (1h, 30m) or an RFC 3339 time."""
    if since is None:
        return None
    from kube_audit.runtime.flags import parse_duration  # stdlib only

    try:
        return (now or datetime.now(UTC)) - timedelta(seconds=parse_duration(since))
    except (argparse.ArgumentTypeError, ValueError):
        when = _when(since)
        if when is None:
            raise CommandError(f"bad --since {since!r}: expected a duration like 1h or an RFC 3339 time") from None
        return when


def select(entries: list[dict[str, Any]], since: datetime | None, user: str | None, verb: str | None) -> list[dict[str, Any]]:
    out = []
    for e in entries:
        if user is not None and e.get("user") != user or verb is not None and e.get("verb") != verb:
            continue
        when = _when(e.get("time", ""))
        if since is not None and (when is None or when < since):
            continue
        out.append(e)
    return sorted(out, key=lambda e: (str(e.get("time", "")), str(e.get("auditID", ""))))


def render(entries: list[dict[str, Any]], output: str) -> str:
    if output not in ("table", "wide"):
        return dump(entries, output)
    return table(COLUMNS, [(_short_time(e), str(e.get("user", "")),
                            str(e.get("verb", "")) + (f"/{e['subresource']}" if e.get("subresource") else ""),
                            str(e.get("change", ""))) for e in entries])


def run(args: argparse.Namespace) -> int:
    since = cutoff(args.since)
    try:
        kube = Kube.connect(args.kubeconfig, args.context)
    except KubeUnconfigured as exc:
        raise CommandError(f"no cluster to talk to: {exc}") from exc
    try:
        return _show(kube, args, since)
    except KubeError as exc:
        raise CommandError(" ".join(str(exc).split())) from exc
    finally:
        kube.close()


def _show(kube: Kube, args: argparse.Namespace, since: datetime | None) -> int:
    try:
        r = kube.resolve(args.resource, args.api_version)
    except NotFound:
        raise CommandError(f'the server doesn\'t have a resource type "{args.resource}"') from None
    namespace = (args.namespace or kube.namespace or "default") if r.namespaced else ""
    what = f"{r.plural}.{r.group}" if r.group else r.plural
    try:
        obj = kube.get(r.group, r.version, r.plural, namespace, args.name)
    except NotFound:
        where = f" in namespace {namespace}" if namespace else ""
        sys.stderr.write(f'Error from server (NotFound): {what} "{args.name}" not found{where}\n')
        return 1
    name = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    if not name:
        raise CommandError(f'{what} "{args.name}" is not tracked: it has no {ANNOTATION} annotation '
                           "(no change recorded yet, or the tailer does not track this resource)")
    cm_namespace = namespace or args.cluster_scope_namespace
    try:
        configmap = kube.get_configmap(cm_namespace, name)
    except NotFound:
        raise CommandError(f'the audit ConfigMap "{name}" of {what} "{args.name}" is missing '
                           f"in namespace {cm_namespace}") from None
    entries = select(decode_entries(configmap), since, args.user, args.verb)
    if not entries and args.output in ("table", "wide"):
        sys.stderr.write(f'No audit entries found for {what} "{args.name}".\n')
        return 0
    sys.stdout.write(render(entries, args.output))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``kubectl audit show`` (kept for callers of the old entry point)."""
    from kubectl_audit.cli import main as cli_main

    return cli_main(["show", *(sys.argv[1:] if argv is None else argv)])
