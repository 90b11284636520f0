"""Provenance of one object from its audit events: versions, field history, diff, bisect. Pure, no I/O.

A version is the object's state after a successful (2xx, stage ResponseComplete) create, update, patch
or delete on the object itself or its ``status`` or ``scale`` subresource (``kubectl scale``: the
replicas of the Scale become the object's ``spec.replicas``). The state comes from, in order:
the response object (level RequestResponse), the request body of a create or update, or the patch in
the request body applied to the previous known state (kube_audit/model/patch.py says how a patch is
replayed, and when it cannot be: then the version is ``complete: false`` with a ``reason``).
``metadata.managedFields`` is dropped from states (noise). Dry-run requests make no version. Each
version carries ``change``, the summary of kube_audit/model/change.py (the one ConfigMaps use too).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from typing import Any, TypeGuard

from kube_audit.model.audit import MUTATING_VERBS, is_dry_run
from kube_audit.model.change import summarize_change
from kube_audit.model.fields import MISSING, diff, get_field, parse_field  # noqa: F401  (re-exported)
from kube_audit.model.groups import is_builtin_group  # noqa: F401  (re-exported)
from kube_audit.model.patch import PatchError, apply_patch, json_patch, merge_patch, patch_type  # noqa: F401

VERSION_SUBRESOURCES = ("", "status", "scale")


# ---- which events make versions -------------------------------------------------------------------

def makes_version(event: dict[str, Any]) -> bool:
    ref = event.get("objectRef") or {}
    code = (event.get("responseStatus") or {}).get("code")
    return (
        event.get("stage") == "ResponseComplete"
        and event.get("verb") in MUTATING_VERBS
        and isinstance(code, int) and 200 <= code < 300
        and (ref.get("subresource") or "") in VERSION_SUBRESOURCES
        and not is_dry_run(event)
    )


def is_object(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and bool(value.get("kind")) and value.get("kind") != "Status"


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return out


# ---- one step ------------------------------------------------------------------------------------

def _scale(event: dict[str, Any], state: dict[str, Any] | None, known: bool,
           builtin: bool) -> tuple[dict[str, Any] | None, str, str | None]:
    """A write to the scale subresource: the Scale's ``spec.replicas`` is the object's."""
    verb, req, resp = str(event.get("verb")), event.get("requestObject"), event.get("responseObject")
    kind = patch_type(req) if verb == "patch" else None
    if not known or state is None:
        return None, "no known state before this scale", kind
    spec = state.get("spec")
    if not builtin and not (isinstance(spec, dict) and "replicas" in spec):
        return None, "scale of a custom resource without spec.replicas: its replicas path is in the CRD", kind
    current = {"spec": {"replicas": spec.get("replicas") if isinstance(spec, dict) else None}}
    replicas: Any = MISSING
    if isinstance(resp, dict) and resp.get("kind") == "Scale":
        replicas = get_field(resp, "spec.replicas")
    elif verb == "update" and isinstance(req, dict):
        replicas = get_field(req, "spec.replicas")
    elif verb == "patch" and req is not None:
        scaled, kind, reason = apply_patch(current, req, False)
        if scaled is None:
            return None, reason, kind
        replicas = get_field(scaled, "spec.replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        return None, "scale body not logged (audit level Metadata)", kind
    new = copy.deepcopy(state)
    new["spec"] = {**(spec if isinstance(spec, dict) else {}), "replicas": replicas}
    return new, "", kind


def next_state(event: dict[str, Any], state: dict[str, Any] | None, known: bool,
               builtin: bool) -> tuple[dict[str, Any] | None, str, str | None]:
    """The object's state after one version-making ``event``: (state or None, reason when it is not
    known, inferred patch type of a patch). A delete gives None with no reason (the object is gone),
    or the object while finalizers hold it."""
    if ((event.get("objectRef") or {}).get("subresource") or "") == "scale":
        return _scale(event, state, known, builtin)
    verb = str(event.get("verb"))
    req, resp = event.get("requestObject"), event.get("responseObject")
    kind = patch_type(req) if verb == "patch" else None
    if verb == "delete":
        finalizing = is_object(resp) and (resp.get("metadata") or {}).get("finalizers")
        return (clean(resp) if finalizing and isinstance(resp, dict) else None), "", None
    if is_object(resp):
        return clean(resp), "", kind
    if verb in ("create", "update"):
        if isinstance(req, dict):
            return clean(req), "", kind
        return None, "request body not logged (audit level Metadata)", kind
    if req is None:
        return None, "patch body not logged (audit level Metadata)", kind
    if not known or state is None:
        return None, "no known state before this patch", kind
    new, kind, reason = apply_patch(state, req, builtin)
    return (clean(new) if new is not None else None), reason, kind


def _change(v: dict[str, Any], req: Any, before: dict[str, Any] | None, known: bool, first: bool) -> str:
    if not v["complete"]:
        return f"unknown: {v['reason']}"
    if v["deleted"] or (v["verb"] == "create" and not v["subresource"]):
        return summarize_change(v["verb"], v["subresource"])
    if not known:
        return "state known again"
    if before is None:
        return "first known state" if first else "created"
    return summarize_change(v["verb"], v["subresource"], v["code"], req, before, v["object"])


# ---- versions ------------------------------------------------------------------------------------

def versions(events: Iterable[tuple[int, dict[str, Any]]], builtin: bool = False,
             first: int = 1) -> list[dict[str, Any]]:
    """The versions of one object from its events (store sequence, event), oldest first, numbered from
    ``first`` (more than 1 when older events were left out)."""
    out: list[dict[str, Any]] = []
    state: dict[str, Any] | None = None
    known = False  # whether ``state`` is the object's state (None = it does not exist)
    for seq, event in events:
        if not makes_version(event):
            continue
        verb = str(event.get("verb"))
        req = event.get("requestObject")
        v: dict[str, Any] = {
            "version": first + len(out), "resourceVersion": str(seq), "auditID": event.get("auditID", ""),
            "time": event.get("stageTimestamp", ""), "user": (event.get("user") or {}).get("username", ""),
            "verb": verb, "subresource": (event.get("objectRef") or {}).get("subresource") or "",
            "code": (event.get("responseStatus") or {}).get("code"), "complete": True, "deleted": verb == "delete",
        }
        new, reason, kind = next_state(event, state, known, builtin)
        if verb == "patch":
            v["patch"], v["patchType"] = req, kind
        if new is None and verb != "delete":
            v["complete"], v["reason"] = False, reason
        v["object"] = new
        v["change"] = _change(v, req, state, known or not out, not out)
        state, known = new, new is not None or verb == "delete"
        out.append(v)
    return out


# ---- fields, diff, history, bisect -----------------------------------------------------------------

def describe_change(old: dict[str, Any] | None, new: dict[str, Any] | None, width: int = 72) -> str:
    """``change.summarize_change`` between two states: "created" (no old), "deleted" (no new), else the
    fields that changed (bookkeeping and status left out)."""
    if new is None:
        return "deleted"
    if old is None:
        return "created"
    return summarize_change("update", before=old, after=new, limit=width)


def summary(v: dict[str, Any]) -> dict[str, Any]:
    """A version without its object and patch bodies."""
    return {k: val for k, val in v.items() if k not in ("object", "patch")}
def field_history(vs: Sequence[dict[str, Any]], field: str = "spec") -> list[dict[str, Any]]:
    """The versions in which ``field`` changed (incomplete versions are listed: the value is unknown)."""
    out: list[dict[str, Any]] = []
    last: Any = MISSING
    last_known = True  # before the first version the field did not exist
    for v in vs:
        if not v["complete"]:
            out.append({**summary(v), "value": None, "changes": None})
            last_known = False
            continue
        value = MISSING if v["object"] is None else get_field(v["object"], field)
        if last_known and diff(last, value) == [] and not v["deleted"] and out:
            continue
        changes = diff(last, value, field) if last_known else None
        out.append({**summary(v), "value": None if value is MISSING else value, "changes": changes})
        last, last_known = value, True
    return out


def diff_versions(start: dict[str, Any], end: dict[str, Any], field: str = "") -> dict[str, Any]:
    def pick(v: dict[str, Any]) -> Any:
        if v["object"] is None:
            return MISSING
        return get_field(v["object"], field) if field else v["object"]

    return {"from": summary(start), "to": summary(end), "field": field,
            "changes": diff(pick(start), pick(end), field)}


def parse_value(raw: str) -> Any:
    """A bisect value: JSON when it parses (3, true, {"a":1}), else the string itself."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def bisect(vs: Sequence[dict[str, Any]], field: str, raw: str) -> dict[str, Any] | None:
    """The first version where ``field`` equals the value. Versions that cannot be rebuilt are skipped
    and listed: the value may have appeared in one of them first (then ``uncertain`` is true)."""
    want = parse_value(raw)
    skipped: list[int] = []
    previous: dict[str, Any] | None = None
    for v in vs:
        if not v["complete"]:
            skipped.append(v["version"])
            continue
        value = MISSING if v["object"] is None else get_field(v["object"], field)
        if value is not MISSING and (value == want or value == raw):
            return {"field": field, "value": value, "version": summary(v),
                    "previous": summary(previous) if previous else None,
                    "uncertain": bool(skipped), "skippedVersions": skipped}
        previous = v
    return None
