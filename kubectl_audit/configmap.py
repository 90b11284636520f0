"""kubectl audit <resource> <name>: the object's audit ConfigMap as a table, JSON or YAML.

Finds the ConfigMap through the annotation the tailer put on the object, so it needs nothing but read
access to the object and the ConfigMap. Every API call goes through kube_audit/kube.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from kube_audit.contract import ANNOTATION, decode_entries
from kube_audit.errors import KubeError, KubeUnconfigured, NotFound
from kube_audit.kube import Kube
from kube_audit.runtime.flags import parse_duration

COLUMNS = ("TIME", "USER", "VERB", "CHANGE")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        sys.stderr.write(f"error: {message}\nSee 'kubectl audit --help' for usage.\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kubectl audit", description="Show who changed a tracked object, from its audit ConfigMap.")
    p.add_argument("resource", help="resource type like kubectl: databases, databases.example.com, db")
    p.add_argument("name", help="object name")
    p.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table", help="output format")
    p.add_argument("--since", type=parse_duration, help="only entries newer than this, e.g. 1h, 30m")
    p.add_argument("--user", help="only entries by this user")
    p.add_argument("--verb", help="only entries with this verb (create, update, patch, delete)")
    p.add_argument("--api-version", help="group/version of the resource, skips discovery")
    p.add_argument("--cluster-scope-namespace", default="kube-audit",
                   help="where the tailer keeps ConfigMaps of cluster-scoped objects (default kube-audit)")
    p.add_argument("--kubeconfig", help="path to the kubeconfig file")
    p.add_argument("--context", help="the kubeconfig context to use")
    return p


def table(rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns, three spaces apart, no borders (kubectl get's printer)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def _when(entry: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(entry.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return None


def _short_time(entry: dict[str, Any]) -> str:
    when = _when(entry)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else str(entry.get("time", ""))


def select(entries: list[dict[str, Any]], since: float | None, user: str | None, verb: str | None,
           now: datetime | None = None) -> list[dict[str, Any]]:
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=since) if since is not None else None
    out = []
    for e in entries:
        if user is not None and e.get("user") != user or verb is not None and e.get("verb") != verb:
            continue
        when = _when(e)
        if cutoff is not None and (when is None or when < cutoff):
            continue
        out.append(e)
    return sorted(out, key=lambda e: (str(e.get("time", "")), str(e.get("auditID", ""))))


def render(entries: list[dict[str, Any]], output: str) -> str:
    if output == "json":
        return json.dumps(entries, indent=4, ensure_ascii=False) + "\n"
    if output == "yaml":
        import yaml

        return str(yaml.safe_dump(entries, sort_keys=False, allow_unicode=True))
    rows = [COLUMNS] + [(_short_time(e), str(e.get("user", "")),
                         str(e.get("verb", "")) + (f"/{e['subresource']}" if e.get("subresource") else ""),
                         str(e.get("change", ""))) for e in entries]
    return table(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        kube = Kube.connect(args.kubeconfig, args.context)
    except KubeUnconfigured as exc:
        sys.stderr.write(f"error: no cluster to talk to: {exc}\n")
        return 1
    try:
        return _show(kube, args)
    except KubeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    finally:
        kube.close()


def _show(kube: Kube, args: argparse.Namespace) -> int:
    try:
        r = kube.resolve(args.resource, args.api_version)
    except NotFound:
        sys.stderr.write(f'error: the server doesn\'t have a resource type "{args.resource}"\n')
        return 1
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
        sys.stderr.write(f'error: {what} "{args.name}" is not tracked: it has no {ANNOTATION} annotation '
                         "(no change recorded yet, or the tailer does not track this resource)\n")
        return 1
    cm_namespace = namespace or args.cluster_scope_namespace
    try:
        configmap = kube.get_configmap(cm_namespace, name)
    except NotFound:
        sys.stderr.write(f'error: the audit ConfigMap "{name}" of {what} "{args.name}" is missing '
                         f"in namespace {cm_namespace}\n")
        return 1
    entries = select(decode_entries(configmap), args.since, args.user, args.verb)
    if not entries and args.output == "table":
        sys.stderr.write(f'No audit entries found for {what} "{args.name}".\n')
        return 0
    sys.stdout.write(render(entries, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
