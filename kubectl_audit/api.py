"""kubectl audit history|diff|bisect|watch: the tailer's audit API from the command line.

    kubectl audit history [RESOURCE [NAME]] [-n NS | -A] [--since 2h] [--user U] [--verb V]
    kubectl audit diff RESOURCE NAME [--from N] [--to M] [--field spec]
    kubectl audit bisect RESOURCE NAME --field spec.replicas --value 3
    kubectl audit watch [RESOURCE [NAME]] [-n NS | -A] [--resource-version RV]

``RESOURCE`` is a plural, optionally with its group (``databases.example.com``). The server comes from
``--server`` or KUBECTL_AUDIT_SERVER, the bearer token from ``--token``, ``--token-file`` or
KUBECTL_AUDIT_TOKEN. The parser is kubectl_audit/cli.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from kube_audit.contract import events_path, object_path
from kube_audit.model.groups import CLUSTER_SCOPED
from kubectl_audit.cli import CommandError, namespace
from kubectl_audit.printer import dump, emit, table


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
        try:
            self.http = httpx.Client(base_url=self.server, headers=headers, timeout=args.request_timeout)
        except (httpx.InvalidURL, ValueError) as exc:
            raise CommandError(f"bad --server {args.server!r}: {exc}") from exc

    def _check(self, resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        try:
            message = resp.json().get("message") or resp.reason_phrase
        except ValueError:
            message = resp.text.strip()[:200] or resp.reason_phrase
        words = {401: "unauthorized", 403: "forbidden", 404: "not found"}.get(resp.status_code, "server error")
        raise CommandError(f"{words} ({resp.status_code}): {' '.join(str(message).split())}")

    def get(self, path: str, params: dict[str, Any]) -> Any:
        try:
            resp = self.http.get(path, params={k: v for k, v in params.items() if v is not None})
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot reach the audit API at {self.server}: {exc or type(exc).__name__}") from exc
        self._check(resp)
        try:
            return resp.json()
        except ValueError as exc:
            raise CommandError(f"the audit API at {self.server} answered something that is not JSON") from exc

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


def _cluster_scoped(args: argparse.Namespace) -> bool:
    return bool(args.cluster_scoped or (args.resource and args.resource.split(".", 1)[0] in CLUSTER_SCOPED
                                        and not args.namespace))


def view_path(args: argparse.Namespace, view: str) -> str:
    return object_path(args.resource, args.name, view, "" if _cluster_scoped(args) else namespace(args))


def event_filters(args: argparse.Namespace) -> dict[str, Any]:
    if args.all_namespaces:
        ns = None
    elif _cluster_scoped(args):
        ns = ""  # cluster-scoped objects have no namespace
    else:
        ns = namespace(args)
    return {"namespace": ns, "resource": args.resource, "name": args.name, "since": args.since,
            "user": args.user, "verb": args.verb}


EVENT_HEADER = ["TIME", "STAGE", "USER", "VERB", "RESOURCE", "NAMESPACE", "NAME", "CODE"]
EVENT_WIDTHS = [27, 17, 20, 6, 20, 12, 16, 4]  # a watch prints rows before it has seen them all


def event_row(ev: dict[str, Any]) -> list[Any]:
    ref = ev.get("objectRef") or {}
    resource = ref.get("resource", "") + (f".{ref['apiGroup']}" if ref.get("apiGroup") else "")
    resource += f"/{ref['subresource']}" if ref.get("subresource") else ""
    return [ev.get("stageTimestamp", ""), ev.get("stage"), (ev.get("user") or {}).get("username"), ev.get("verb"),
            resource, ref.get("namespace"), ref.get("name"), (ev.get("responseStatus") or {}).get("code")]


def history(client: Client, args: argparse.Namespace) -> None:
    if args.resource and args.name:
        body = client.get(view_path(args, "versions"), {})
        body["items"] = [v for v in body["items"] if (not args.user or v["user"] == args.user)
                         and (not args.verb or v["verb"] == args.verb)]
        emit(body, args.output, lambda b: table(
            ["VERSION", "TIME", "USER", "VERB", "PATCH", "CHANGE"],
            [[v["version"], v["time"], v["user"], v["verb"] + (f"/{v['subresource']}" if v["subresource"] else ""),
              v.get("patchType"), v.get("change")] for v in b["items"]]))
        return
    params = {**event_filters(args), "limit": args.limit}
    events: list[dict[str, Any]] = []
    while True:
        page = client.get(events_path(), params)
        events += page["items"]
        if not page["metadata"].get("continue"):
            break
        params["continue"] = page["metadata"]["continue"]
    emit({**page, "items": events}, args.output,
         lambda b: table(EVENT_HEADER, [event_row(e) for e in b["items"]]))


def diff(client: Client, args: argparse.Namespace) -> None:
    body = client.get(view_path(args, "diff"), {"start": args.start, "end": args.end, "field": args.field})

    def render(b: dict[str, Any]) -> str:
        head = (f"version {b['from']['version']} ({b['from']['time']}, {b['from']['user']}) -> "
                f"version {b['to']['version']} ({b['to']['time']}, {b['to']['user']})\n")
        rows = [[c["op"], c["path"], json.dumps(c.get("from")) if "from" in c else "",
                 json.dumps(c.get("to")) if "to" in c else ""] for c in b["changes"]]
        return head + (table(["OP", "PATH", "FROM", "TO"], rows) if rows else "no changes\n")

    emit(body, args.output, render)


def bisect(client: Client, args: argparse.Namespace) -> None:
    body = client.get(view_path(args, "bisect"), {"field": args.field, "value": args.value})

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
        sys.stdout.write(table(EVENT_HEADER, [], EVENT_WIDTHS))
        sys.stdout.flush()
    for item in client.stream(events_path(), params):
        if item.get("type") == "ERROR":
            raise CommandError(f"watch ended: {(item.get('object') or {}).get('message')}")
        if item.get("type") != "ADDED":
            continue
        if args.output == "json":
            sys.stdout.write(json.dumps(item["object"]) + "\n")
        elif args.output == "yaml":
            sys.stdout.write("---\n" + dump(item["object"], "yaml"))
        else:
            sys.stdout.write(table(EVENT_HEADER, [event_row(item["object"])], EVENT_WIDTHS).split("\n", 1)[1])
        sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    client = Client(args)
    with client.http:
        {"history": history, "diff": diff, "bisect": bisect, "watch": watch}[args.command](client, args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``kubectl audit`` with these commands (kept for callers of the old entry point)."""
    from kubectl_audit.cli import main as cli_main

    return cli_main(argv)
