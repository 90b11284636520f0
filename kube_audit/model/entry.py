"""An audit ConfigMap entry for one request, and the object state it leaves behind. Pure, no I/O.

The state is the object as far as the events tell (None when not known); the entry's ``change`` is the
one summary of kube_audit/model/change.py, computed from the state before and after.
"""

from __future__ import annotations

from typing import Any

from kube_audit.model.audit import EventView, is_dry_run
from kube_audit.model.change import summarize_change
from kube_audit.model.groups import is_builtin_group
from kube_audit.model.provenance import VERSION_SUBRESOURCES, is_object, next_state

MAX_GROUPS = 16  # user groups kept per entry


def state_after(event: dict[str, Any], ev: EventView, before: dict[str, Any] | None) -> dict[str, Any] | None:
    """The object's state after this request, as far as the event tells (None: not known or gone)."""
    if (ev.code is not None and ev.code >= 300) or is_dry_run(event):
        return before
    if ev.verb == "delete" and not ev.subresource:
        return None
    if ev.subresource not in VERSION_SUBRESOURCES:  # e.g. pods/exec: the object itself is not sent
        resp = event.get("responseObject")
        same = is_object(resp) and before is not None and resp.get("kind") == before.get("kind")
        return next_state(event, before, True, False)[0] if same else before
    builtin = is_builtin_group(ev.object.group if ev.object else ev.group)
    return next_state(event, before, before is not None, builtin)[0]


def summarize(event: dict[str, Any], ev: EventView, before: dict[str, Any] | None,
              after: Any = ...) -> str:
    """``change.summarize_change`` for one event, given the state before it (None: not known)."""
    if after is ...:
        after = state_after(event, ev, before)
    return summarize_change(ev.verb, ev.subresource, ev.code, event.get("requestObject"), before,
                            after if before is not None else None)


def make_entry(event: dict[str, Any], ev: EventView, before: dict[str, Any] | None,
               after: Any = ...) -> dict[str, Any]:
    """One entry in the format of kube_audit/contract.py ENTRY_FIELDS."""
    return {"time": ev.stage_timestamp, "user": ev.user, "groups": list(ev.groups[:MAX_GROUPS]), "verb": ev.verb,
            "subresource": ev.subresource, "auditID": ev.audit_id, "code": ev.code,
            "change": summarize(event, ev, before, after)}
