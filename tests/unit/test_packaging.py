"""Each program is an extra of pyproject.toml: what its code imports must be in its extra (or the base),
and the sidecar's extra holds no database driver or API stack."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# distribution name -> the import name it provides, where they differ
IMPORT_NAMES = {"prometheus-client": "prometheus_client", "pyyaml": "yaml", "json-merge-patch": "json_merge_patch",
                "psycopg-pool": "psycopg_pool"}
OURS = {"fluent_forward", "kube_audit", "forwarder", "tailer", "kubectl_audit"}
# the packages each program is made of (kube_audit's daemon-only parts belong to the daemons)
PROGRAMS = {
    "forwarder": ["forwarder", "fluent_forward", "kube_audit/runtime", "kube_audit/kube/aio.py"],
    "tailer": ["tailer", "fluent_forward", "kube_audit/runtime", "kube_audit/kube/aio.py"],
    "plugin": ["kubectl_audit", "kube_audit/kube/blocking.py", "kube_audit/kube/__init__.py"],
}
BASE = ["kube_audit/model", "kube_audit/contract.py", "kube_audit/errors.py"]


def requirement_modules(requirements: list[str]) -> set[str]:
    names = set()
    for req in requirements:
        name = re.split(r"[\[<>=~! ;]", req, maxsplit=1)[0].lower()
        if name != "kube-audit-forwarder":
            names.add(IMPORT_NAMES.get(name, name.replace("-", "_")))
    return names


def third_party_imports(paths: list[str]) -> set[str]:
    found: set[str] = set()
    for rel in paths:
        target = ROOT / rel
        for path in [target] if target.is_file() else target.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in OURS}


def test_every_program_installs_what_it_imports() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    base = requirement_modules(PYPROJECT["project"]["dependencies"])
    assert third_party_imports(BASE) <= base
    for program, paths in PROGRAMS.items():
        have = base | requirement_modules(extras[program])
        if program == "tailer":
            have |= requirement_modules(extras["postgres"])  # imported only with a postgresql:// store
        assert third_party_imports(paths) <= have, program


def test_the_sidecar_installs_no_database_driver_or_api_stack() -> None:
    forwarder = requirement_modules(PYPROJECT["project"]["optional-dependencies"]["forwarder"])
    assert not forwarder & {"psycopg", "psycopg_pool", "httpx"}
    assert set(PYPROJECT["project"]["optional-dependencies"]["all"][0].split("[")[1].rstrip("]").split(",")) == {
        "forwarder", "tailer", "postgres", "plugin"}
