"""kubectl audit history|diff|bisect|watch: the tailer's audit API from the command line.

    kubectl audit history [RESOURCE [NAME]] [-n NS | -A] [--since 2h] [--user U] [--verb V]
    kubectl audit diff RESOURCE NAME [--from N] [--to M] [--field spec]
    kubectl audit bisect RESOURCE NAME --field spec.replicas --value 3
    kubectl audit watch [RESOURCE [NAME]] [-n NS | -A] [--resource-version RV]

``RESOURCE`` is a plural, optionally with its group (``databases.example.com``). The server comes from
``--server`` or KUBECTL_AUDIT_SERVER, the bearer token from ``--token``, ``--token-file`` or
KUBECTL_AUDIT_TOKEN. Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import yaml

from kube_audit.contract import PREFIX
from kube_audit.model.provenance import describe_change

CLUSTER_SCOPED = {"nodes", "namespaces", "persistentvolumes", "clusterroles", "clusterrolebindings",
                  "storageclasses", "customresourcedefinitions", "priorityclasses", "ingressclasses",
                  "validatingwebhookconfigurations", "mutatingwebhookconfigurations", "apiservices",
                  "certificatesigningrequests", "csidrivers", "csinodes", "runtimeclasses", "volumeattachments"}


class CommandError(Exception):
    """Printed as one line, exit status 1."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(1)  # like kubectl: 1 on any error


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("-n", "--namespace", default=None, help="namespace (default: default)")
    common.add_argument("-A", "--all-namespaces", action="store_true", help="all namespaces (cluster-wide)")
    common.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    common.add_argument("--server", default=os.environ.get("KUBECTL_AUDIT_SERVER", "http://127.0.0.1:8080"),
                        help="audit API base URL [env KUBECTL_AUDIT_SERVER]")
    common.add_argument("--token", default=os.environ.get("KUBECTL_AUDIT_TOKEN"),
                        help="bearer token [env KUBECTL_AUDIT_TOKEN]")
    common.add_argument("--token-file", help="file holding the bearer token")
    common.add_argument("--cluster-scoped", action="store_true", help="the object is cluster-scoped")
    common.add_argument("--request-timeout", type=float, default=30.0, help="seconds (default 30)")
    p = Parser(prog="kubectl audit", description="Audit history from the kube-audit-forwarder API.")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("history", "watch"):
        s = sub.add_parser(name, parents=[common], help=f"{name} audit events or an object's versions")
        s.add_argument("resource", nargs="?")
        s.add_argument("name", nargs="?")
        s.add_argument("--since", help="only events after this (RFC 3339 or a duration like 2h)")
        s.add_argument("--user", help="only this user")
        s.add_argument("--verb", help="only this verb")
        if name == "watch":
            s.add_argument("--resource-version", help="resume after this store sequence")
        else:
            s.add_argument("--limit", type=int, default=500, help="events per page (default 500)")
    d = sub.add_parser("diff", parents=[common], help="what changed between two versions of an object")
    d.add_argument("resource")
    d.add_argument("name")
    d.add_argument("--from", dest="start", type=int, help="version (default: the one before --to)")
    d.add_argument("--to", dest="end", type=int, help="version (default: the last)")
    d.add_argument("--field", default="", help="dotted path, e.g. spec.template")
    b = sub.add_parser("bisect", parents=[common], help="the first version where a field had a value")
    b.add_argument("resource")
    b.add_argument("name")
    b.add_argument("--field", required=True, help="dotted path, e.g. spec.replicas")
    b.add_argument("--value", required=True, help="JSON value or string")
    return p


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        token = args.token
        if args.token_file:
            try:
                with open(args.token_file, encoding="utf-8") as fh:
                    token = fh.read().strip()
            except OSError as exc:
                raise CommandError(f"cannot read token file {args.token_file}: {exc.strerror}") from exc
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = args.server.rstrip("/")
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=args.request_timeout)

    def _check(self, resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        try:
            message = resp.json().get("message") or resp.reason_phrase
        except ValueError:
            message = resp.text.strip()[:200] or resp.reason_phrase
        words = {401: "unauthorized", 403: "forbidden", 404: "not found"}.get(resp.status_code, "server error")
        raise CommandError(f"{words} ({resp.status_code}): {message}")

    def get(self, path: str, params: dict[str, Any]) -> Any:
        try:
            resp = self.http.get(path, params={k: v for k, v in params.items() if v is not None})
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot reach the audit API at {self.server}: {exc or type(exc).__name__}") from exc
        self._check(resp)
        return resp.json()

    def stream(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        try:
            with self.http.stream("GET", path, params={k: v for k, v in params.items() if v is not None},
                                  timeout=httpx.Timeout(self.http.timeout.connect, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._check(resp)
                for line in resp.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise CommandError(f"lost the audit API at {self.server}: {exc or type(exc).__name__}") from exc


def object_path(args: argparse.Namespace) -> str:
    plural = args.resource.split(".", 1)[0]
    if args.cluster_scoped or (plural in CLUSTER_SCOPED and args.namespace is None):
        return f"{PREFIX}/{args.resource}/{args.name}"
    return f"{PREFIX}/namespaces/{args.namespace or 'default'}/{args.resource}/{args.name}"


def event_filters(args: argparse.Namespace) -> dict[str, Any]:
    namespace = None if args.all_namespaces else (args.namespace or "default")
    if args.resource and args.resource.split(".", 1)[0] in CLUSTER_SCOPED and args.namespace is None:
        namespace = ""  # cluster-scoped objects have no namespace
    return {"namespace": namespace, "resource": args.resource, "name": args.name, "since": args.since,
            "user": args.user, "verb": args.verb}


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [["<none>" if c in (None, "") else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells) + "\n"


def event_row(ev: dict[str, Any]) -> list[Any]:
    ref = ev.get("objectRef") or {}
    resource = ref.get("resource", "") + (f".{ref['apiGroup']}" if ref.get("apiGroup") else "")
    resource += f"/{ref['subresource']}" if ref.get("subresource") else ""
    return [ev.get("stageTimestamp", ""), (ev.get("user") or {}).get("username"), ev.get("verb"), resource,
            ref.get("namespace"), ref.get("name"), (ev.get("responseStatus") or {}).get("code")]


EVENT_HEADER = ["TIME", "USER", "VERB", "RESOURCE", "NAMESPACE", "NAME", "CODE"]


def emit(obj: Any, output: str, render_table: Any) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    elif output == "yaml":
        sys.stdout.write(yaml.safe_dump(obj, sort_keys=False))
    else:
        sys.stdout.write(render_table(obj))


def version_changes(versions: list[dict[str, Any]]) -> dict[int, str]:
    """What each version changed, in words; an unknown state says why instead."""
    out: dict[int, str] = {}
    before: dict[str, Any] | None = None
    known = True
    for v in versions:
        if not v["complete"]:
            out[v["version"]] = f"unknown: {v['reason']}"
            known = False
            continue
        new = None if v["deleted"] else v["object"]
        if before is None and new is not None and v["verb"] != "create":
            out[v["version"]] = "first known state"  # the create is older than what is stored
        else:
            out[v["version"]] = describe_change(before, new) if known or new is None else "state known again"
        before, known = new, True
    return out


def history(client: Client, args: argparse.Namespace) -> None:
    if args.resource and args.name:
        body = client.get(object_path(args) + "/versions", {})
        items = [v for v in body["items"] if (not args.user or v["user"] == args.user)
                 and (not args.verb or v["verb"] == args.verb)]
        changes = version_changes(body["items"])  # against the previous version, before the filters
        body["items"] = items
        emit(body, args.output, lambda b: table(
            [[v["version"], v["time"], v["user"], v["verb"] + (f"/{v['subresource']}" if v["subresource"] else ""),
              v.get("patchType"), changes[v["version"]]] for v in b["items"]],
            ["VERSION", "TIME", "USER", "VERB", "PATCH", "CHANGE"]))
        return
    params = {**event_filters(args), "limit": args.limit}
    events: list[dict[str, Any]] = []
    while True:
        page = client.get(PREFIX + "/events", params)
        events += page["items"]
        if not page["metadata"].get("continue"):
            break
        params["continue"] = page["metadata"]["continue"]
    emit({**page, "items": events}, args.output, lambda b: table([event_row(e) for e in b["items"]], EVENT_HEADER))


def diff(client: Client, args: argparse.Namespace) -> None:
    body = client.get(object_path(args) + "/diff", {"start": args.start, "end": args.end, "field": args.field})

    def render(b: dict[str, Any]) -> str:
        head = (f"version {b['from']['version']} ({b['from']['time']}, {b['from']['user']}) -> "
                f"version {b['to']['version']} ({b['to']['time']}, {b['to']['user']})\n")
        rows = [[c["op"], c["path"], json.dumps(c.get("from")) if "from" in c else "",
                 json.dumps(c.get("to")) if "to" in c else ""] for c in b["changes"]]
        return head + (table(rows, ["OP", "PATH", "FROM", "TO"]) if rows else "no changes\n")

    emit(body, args.output, render)


def bisect(client: Client, args: argparse.Namespace) -> None:
    body = client.get(object_path(args) + "/bisect", {"field": args.field, "value": args.value})

    def render(b: dict[str, Any]) -> str:
        v = b["version"]
        out = f"version {v['version']} ({v['time']}, {v['user']}, {v['verb']}): {b['field']} = {json.dumps(b['value'])}\n"
        if b["uncertain"]:
            out += (f"uncertain: versions {', '.join(map(str, b['skippedVersions']))} could not be rebuilt "
                    "and may have had this value first\n")
        return out

    emit(body, args.output, render)


def watch(client: Client, args: argparse.Namespace) -> None:
    params = {**event_filters(args), "watch": "true", "resourceVersion": args.resource_version}
    if args.output == "table":
        sys.stdout.write(table([], EVENT_HEADER))
    for item in client.stream(PREFIX + "/events", params):
        if item.get("type") == "ERROR":
            raise CommandError(f"watch ended: {item['object'].get('message')}")
        if item.get("type") != "ADDED":
            continue
        if args.output == "json":
            sys.stdout.write(json.dumps(item["object"]) + "\n")
        elif args.output == "yaml":
            sys.stdout.write("---\n" + yaml.safe_dump(item["object"], sort_keys=False))
        else:
            sys.stdout.write(table([event_row(item["object"])], EVENT_HEADER).split("\n", 1)[1])
        sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.namespace is not None and args.all_namespaces:
        parser.error("-n and -A go separately")
    try:
        client = Client(args)
        with client.http:
            {"history": history, "diff": diff, "bisect": bisect, "watch": watch}[args.command](client, args)
    except CommandError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
