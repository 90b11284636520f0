"""kubectl audit history|diff|bisect|watch: the tailer's audit API from the command line.

    kubectl audit history [RESOURCE [NAME]] [-n NS | -A] [--since 2h] [--user U] [--verb V]
    kubectl audit diff RESOURCE NAME [--from N] [--to M] [--field spec]
    kubectl audit bisect RESOURCE NAME --field spec.replicas --value 3
    kubectl audit watch [RESOURCE [NAME]] [-n NS | -A] [--resource-version RV]

    kubectl audit NAME                              the object's versions, found by its name

Each takes ``--cluster`` and ``--source`` (the forwarder's): an object whose events came from several
clusters needs ``--cluster`` (the API answers 409 otherwise: one line, the clusters named). Event tables
add CLUSTER and SOURCE columns when more than one appears, or with ``-o wide``.

By default the requests go to the kubeconfig's (or the pod's) cluster: the apiserver proxies the audit
API's paths to the tailer (an aggregated API), with the context's credentials; ``RESOURCE`` is resolved
like kubectl does, through discovery (``deploy``, ``Deployment``, ``deployments.apps``). With ``--server``
(or KUBECTL_AUDIT_SERVER) they go to a tailer directly (standalone), with ``--token``, ``--token-file`` or
KUBECTL_AUDIT_TOKEN, and common short names come from a built-in table. The parser is kubectl_audit/cli.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from kube_audit.contract import CLUSTER_ANNOTATION, PREFIX, SOURCE_ANNOTATION, object_path
from kube_audit.errors import KubeError, KubeUnconfigured, NotFound
from kube_audit.model.groups import CLUSTER_SCOPED, common_resource
from kubectl_audit.cli import CommandError, namespace
from kubectl_audit.printer import dump, emit, table

if TYPE_CHECKING:
    from kube_audit.kube.blocking import Kube  # loads the Kubernetes client: only when there is a cluster


class Client:
    """The audit API: through the cluster's apiserver (``kube`` set) or a tailer's own URL (--server)."""

    def __init__(self, args: argparse.Namespace) -> None:
        token = args.token
        if args.token_file:
            try:
                with open(args.token_file, encoding="utf-8") as fh:
                    token = fh.read().strip()
            except OSError as exc:
                raise CommandError(f"cannot read token file {args.token_file}: {exc.strerror}") from exc
        self.kube: Kube | None = None
        server = args.server or os.environ.get("KUBECTL_AUDIT_SERVER")
        if not server:
            self.kube = connect(args, token)
            self.http, self.server = self.kube.http, self.kube.host
            return
        token = token or os.environ.get("KUBECTL_AUDIT_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = server.rstrip("/")
        try:
            self.http = httpx.Client(base_url=self.server, headers=headers, timeout=args.request_timeout)
        except (httpx.InvalidURL, ValueError) as exc:
            raise CommandError(f"bad --server {server!r}: {exc}") from exc

    def _check(self, resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        try:
            message = resp.json().get("message") or resp.reason_phrase
        except ValueError:
            message = resp.text.strip()[:200] or resp.reason_phrase
        words = {401: "unauthorized", 403: "forbidden", 404: "not found", 409: "conflict"}.get(resp.status_code,
                                                                                             "server error")
        raise CommandError(f"{words} ({resp.status_code}): {' '.join(str(message).split())}")

    def get(self, path: str, params: dict[str, Any]) -> Any:
        try:
            resp = self.http.get(path, params={k: v for k, v in params.items() if v is not None})
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot reach the audit API at {self.server}: {exc or type(exc).__name__}") from exc
        self._check(resp)
        warn(resp)
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


def warn(resp: httpx.Response) -> None:
    """Print the response's ``Warning: 299 - "text"`` headers as kubectl does (e.g. a range that crosses
    a known gap of a source)."""
    for value in resp.headers.get_list("warning"):
        code, _, rest = value.partition(" ")
        text = rest.partition(" ")[2].strip() if code.isdigit() else value
        sys.stderr.write(f"Warning: {text.strip(chr(34))}\n")


def _no_kubeconfig(args: argparse.Namespace) -> bool:
    if args.kubeconfig or args.context or os.environ.get("KUBERNETES_SERVICE_HOST"):
        return False
    paths = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    return not any(os.path.exists(p) for p in paths.split(os.pathsep) if p)


def connect(args: argparse.Namespace, token: str | None) -> Kube:
    """The cluster of the kubeconfig context (or the pod), its credentials unless --token/--token-file."""
    from kube_audit.kube.blocking import Kube, http_client, load

    if _no_kubeconfig(args):
        raise CommandError("no cluster configured: give --server or a kubeconfig")
    try:
        http = http_client(load(args.kubeconfig, args.context))
    except KubeUnconfigured as exc:
        raise CommandError(f"cannot read the kubeconfig: {exc}") from exc
    if token:
        http.headers["Authorization"] = f"Bearer {token}"
    http.timeout = httpx.Timeout(args.request_timeout, connect=min(5.0, args.request_timeout))
    return Kube(http)


def resolve(client: Client, resource: str) -> tuple[str, bool | None]:
    """``resource`` as the audit API names it (``plural[.group]``) and whether it is namespaced (None:
    unknown). Discovery first when talking to a cluster; then the table of common built-in resources; a
    name neither knows is taken as typed (the store may hold the history of a type the cluster dropped)."""
    if client.kube is not None:
        try:
            r = client.kube.resolve(resource)
            return (f"{r.plural}.{r.group}" if r.group else r.plural), r.namespaced
        except NotFound:
            pass
        except KubeError as exc:
            raise CommandError(f"cannot resolve {resource!r} at {client.server}: {' '.join(str(exc).split())}") from exc
    found = common_resource(resource)
    if found is None:
        return resource, None
    plural, group = found
    return (f"{plural}.{group}" if group else plural), plural not in CLUSTER_SCOPED


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
            "user": args.user, "verb": args.verb, **origin(args)}


def origin(args: argparse.Namespace) -> dict[str, Any]:
    """--cluster and --source as the API's parameters (None: not given, left out of the request)."""
    return {"cluster": args.cluster, "source": args.source}


def events_request(filters: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The ``auditevents`` path (a namespace in the path, as the apiserver's RBAC check wants it) and the
    other filters as parameters."""
    ns = filters.get("namespace")
    if not ns:
        return f"{PREFIX}/auditevents", filters
    return f"{PREFIX}/namespaces/{ns}/auditevents", {k: v for k, v in filters.items() if k != "namespace"}


def all_events(client: Client, filters: dict[str, Any], limit: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    path, params = events_request(filters)
    params = {**params, "limit": limit}
    events: list[dict[str, Any]] = []
    while True:
        page = client.get(path, params)
        events += page["items"]
        if not page["metadata"].get("continue"):
            return page, events
        params["continue"] = page["metadata"]["continue"]


EVENT_HEADER = ["TIME", "STAGE", "USER", "VERB", "RESOURCE", "NAMESPACE", "NAME", "CODE"]
EVENT_WIDTHS = [27, 17, 20, 6, 20, 12, 16, 4]  # a watch prints rows before it has seen them all
ORIGIN_HEADER = {CLUSTER_ANNOTATION: "CLUSTER", SOURCE_ANNOTATION: "SOURCE"}


def where_from(ev: dict[str, Any], key: str) -> str | None:
    return ((ev.get("metadata") or {}).get("annotations") or {}).get(key)


def origin_columns(events: list[dict[str, Any]], wide: bool) -> list[str]:
    """The annotations worth a column: CLUSTER and SOURCE with -o wide, else those with more than one value."""
    return [key for key in ORIGIN_HEADER if wide or len({where_from(e, key) for e in events}) > 1]


def event_row(ev: dict[str, Any], extra: Sequence[str] = ()) -> list[Any]:
    ref = ev.get("objectRef") or {}
    resource = ref.get("resource", "") + (f".{ref['apiGroup']}" if ref.get("apiGroup") else "")
    resource += f"/{ref['subresource']}" if ref.get("subresource") else ""
    return [ev.get("stageTimestamp", ""), ev.get("stage"), (ev.get("user") or {}).get("username"), ev.get("verb"),
            resource, ref.get("namespace"), ref.get("name"), (ev.get("responseStatus") or {}).get("code"),
            *(where_from(ev, key) for key in extra)]


def event_table(events: list[dict[str, Any]], wide: bool) -> str:
    extra = origin_columns(events, wide)
    return table(EVENT_HEADER + [ORIGIN_HEADER[k] for k in extra], [event_row(e, extra) for e in events])


def history(client: Client, args: argparse.Namespace) -> None:
    if args.resource and args.name:
        body = client.get(view_path(args, "versions"), origin(args))
        body["items"] = [v for v in body["items"] if (not args.user or v["user"] == args.user)
                         and (not args.verb or v["verb"] == args.verb)]
        emit(body, args.output, lambda b: table(
            ["VERSION", "TIME", "USER", "VERB", "PATCH", "CHANGE"],
            [[v["version"], v["time"], v["user"], v["verb"] + (f"/{v['subresource']}" if v["subresource"] else ""),
              v.get("patchType"), v.get("change")] for v in b["items"]]))
        return
    page, events = all_events(client, event_filters(args), args.limit)
    emit({**page, "items": events}, args.output, lambda b: event_table(b["items"], args.output == "wide"))


def diff(client: Client, args: argparse.Namespace) -> None:
    body = client.get(view_path(args, "diff"), {"start": args.start, "end": args.end, "field": args.field,
                                                 **origin(args)})

    def render(b: dict[str, Any]) -> str:
        head = (f"version {b['from']['version']} ({b['from']['time']}, {b['from']['user']}) -> "
                f"version {b['to']['version']} ({b['to']['time']}, {b['to']['user']})\n")
        rows = [[c["op"], c["path"], json.dumps(c.get("from")) if "from" in c else "",
                 json.dumps(c.get("to")) if "to" in c else ""] for c in b["changes"]]
        return head + (table(["OP", "PATH", "FROM", "TO"], rows) if rows else "no changes\n")

    emit(body, args.output, render)


def bisect(client: Client, args: argparse.Namespace) -> None:
    body = client.get(view_path(args, "bisect"), {"field": args.field, "value": args.value, **origin(args)})

    def render(b: dict[str, Any]) -> str:
        v = b["version"]
        out = f"version {v['version']} ({v['time']}, {v['user']}, {v['verb']}): {b['field']} = {json.dumps(b['value'])}\n"
        if b["uncertain"]:
            out += (f"uncertain: versions {', '.join(map(str, b['skippedVersions']))} could not be rebuilt "
                    "and may have had this value first\n")
        return out

    emit(body, args.output, render)


def watch(client: Client, args: argparse.Namespace) -> None:
    path, params = events_request(event_filters(args))
    # bookmarks keep an idle watch alive through the apiserver's proxy; they are not printed
    params = {**params, "watch": "true", "allowWatchBookmarks": "true", "resourceVersion": args.resource_version}
    extra = origin_columns([], True) if args.output == "wide" else []  # a watch cannot know: -o wide shows them
    header, widths = EVENT_HEADER + [ORIGIN_HEADER[k] for k in extra], [*EVENT_WIDTHS, *(12 for _ in extra)]
    if args.output in ("table", "wide"):
        sys.stdout.write(table(header, [], widths))
        sys.stdout.flush()
    for item in client.stream(path, params):
        if item.get("type") == "ERROR":
            raise CommandError(f"watch ended: {(item.get('object') or {}).get('message')}")
        if item.get("type") != "ADDED":
            continue
        if args.output == "json":
            sys.stdout.write(json.dumps(item["object"]) + "\n")
        elif args.output == "yaml":
            sys.stdout.write("---\n" + dump(item["object"], "yaml"))
        else:
            sys.stdout.write(table(header, [event_row(item["object"], extra)], widths).split("\n", 1)[1])
        sys.stdout.flush()


def find(client: Client, args: argparse.Namespace) -> None:
    """``kubectl audit NAME``: the one object of that name among the recorded ones (in the namespace, or
    all with -A) becomes RESOURCE NAME; none or several are a one-line error."""
    ns = None if args.all_namespaces else namespace(args)
    _, events = all_events(client, {"namespace": ns, "name": args.name, **origin(args)}, 500)
    found = sorted({(ref.get("resource", "") + (f".{ref['apiGroup']}" if ref.get("apiGroup") else ""),
                     ref.get("namespace") or "") for ref in (e.get("objectRef") or {} for e in events)
                    if ref.get("name") == args.name and ref.get("resource")})
    if not found:
        where = "in any namespace" if ns is None else f"in namespace {ns} (-A looks in all)"
        raise CommandError(f'no audit events of an object named "{args.name}" {where}')
    if len(found) > 1:
        names = ", ".join(f"{r} {n + '/' if n else ''}{args.name}" for r, n in found)
        raise CommandError(f'"{args.name}" is ambiguous: {names}; name one: kubectl audit history RESOURCE '
                           f"{args.name} [-n NS]")
    args.resource, ns = found[0]
    args.namespace, args.all_namespaces, args.cluster_scoped = ns or None, False, not ns


def run(args: argparse.Namespace) -> int:
    client = Client(args)
    with client.http:
        if args.by_name:
            args.resource, args.name = None, args.resource
            find(client, args)
        elif args.resource:
            args.resource, namespaced = resolve(client, args.resource)
            args.cluster_scoped = args.cluster_scoped or namespaced is False
        from kubectl_audit import sources

        {"history": history, "diff": diff, "bisect": bisect, "watch": watch, "sources": sources.run}[args.command](
            client, args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``kubectl audit`` with these commands (kept for callers of the old entry point)."""
    from kubectl_audit.cli import main as cli_main

    return cli_main(argv)
