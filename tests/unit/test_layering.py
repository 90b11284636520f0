"""Imports point one way (shared/STYLE.md): checked on the source, not by convention."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {"fluent_forward", "kube_audit", "forwarder", "tailer", "kubectl_audit"}
ALLOWED = {
    "fluent_forward": set(),
    "kube_audit": set(),
    "forwarder": {"fluent_forward", "kube_audit"},
    "tailer": {"fluent_forward", "kube_audit"},
    "kubectl_audit": {"kube_audit"},
}
# one module owns each outside system
OWNERS = {"psycopg_pool": {"tailer/store/postgres.py"}, "kubernetes": {"kube_audit/kube/aio.py", "kube_audit/kube/blocking.py"}, "watchdog": {"forwarder/follow.py"},
          "psycopg": {"tailer/store/postgres.py"}, "sqlite3": {"tailer/store/sqlite.py"}, "socket": set()}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_packages_import_only_what_they_may() -> None:
    bad = []
    for package, allowed in ALLOWED.items():
        for path in (ROOT / package).rglob("*.py"):
            used = imports(path) & PROJECT - {package}
            if used - allowed:
                bad.append(f"{path.relative_to(ROOT)} imports {sorted(used - allowed)}")
    assert bad == []


def test_codec_imports_only_isal_msgpack_msgspec_zstandard_and_the_standard_library() -> None:
    import sys

    for path in (ROOT / "fluent_forward").rglob("*.py"):
        third_party = {m for m in imports(path) if m not in sys.stdlib_module_names and m != "fluent_forward"}
        assert third_party <= {"isal", "msgpack", "msgspec", "zstandard"}, (path, third_party)  # (codecs only, no I/O)


def test_outside_systems_have_one_owner() -> None:
    bad = []
    for package in ("forwarder", "tailer", "kube_audit", "kubectl_audit"):
        for path in (ROOT / package).rglob("*.py"):
            rel = str(path.relative_to(ROOT))
            for lib, owners in OWNERS.items():
                if lib == "socket":
                    continue
                if lib in imports(path) and rel not in owners:
                    bad.append(f"{rel} imports {lib}")
    assert bad == []
