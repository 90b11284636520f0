"""The krew plugin archive of `kubectl audit`, its manifest, and the checks krew makes of both.

    python -m tools.krew build [--out dist/krew]   build the wheel and the archive; print the archive's sha256
    python -m tools.krew --write                   build, then fill sha256 and uri into plugin/krew-audit.yaml
    python -m tools.krew --check                   build, then check plugin/krew-audit.yaml and the archive

The archive (``kubectl-audit-v<version>.tar.gz``) holds the wheel that ``python -m build`` makes, LICENSE, and
``kubectl-audit``: a launcher that makes a private venv beside itself on first use, installs the wheel into it
and runs its ``kubectl-audit`` console script. It is built reproducibly (fixed times, owners and order) so the
same tree gives the same sha256.

krew itself is not installable here, so its checks are written out from its source (sigs.k8s.io/krew:
internal/index/validation/validate.go, pkg/index/types.go, internal/download/downloader.go,
internal/installation/install.go): ``validate_manifest`` and ``install_like_krew``. No package has them.
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "plugin" / "krew-audit.yaml"
RELEASES = "https://github.com/kube-audit-forwarder/kube-audit-forwarder/releases/download"
EPOCH = 315532800  # 1980-01-01, the earliest time a zip (the wheel) can hold: fixed, so builds repeat

LAUNCHER = """#!/bin/sh
# kubectl-audit from the krew archive: a private venv beside this file, made from the wheel on first use.
set -eu
here=$(dirname "$(readlink -f "$0")")
venv="$here/venv"
if [ ! -x "$venv/bin/kubectl-audit" ]; then
  echo "kubectl-audit: first run: installing into $venv (needs python3 >= 3.11)" >&2
  "${KUBECTL_AUDIT_PYTHON:-python3}" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$here"/*.whl >&2
fi
exec "$venv/bin/kubectl-audit" "$@"
"""


def version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def archive_name() -> str:
    return f"kubectl-audit-v{version()}.tar.gz"


def build_wheel(out: Path) -> Path:
    """``python -m build --wheel`` with this interpreter's setuptools (no isolated download), at a fixed time."""
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # nothing left over from an older build goes in
    with tempfile.TemporaryDirectory(prefix="kaf-wheel-") as tmp:
        proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp,
                               str(ROOT)], env=env, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"python -m build failed: {proc.stderr.strip()[-2000:]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"python -m build made {len(wheels)} wheels")
        target = out / wheels[0].name
        shutil.copyfile(wheels[0], target)
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' scratch folder in the tree
    return target


def _member(name: str, data: bytes, mode: int) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info, io.BytesIO(data)


def build(out: Path) -> Path:
    """The wheel, then the archive krew downloads; returns the archive's path."""
    out.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(out)
    members = [("kubectl-audit", LAUNCHER.encode(), 0o755), ("LICENSE", (ROOT / "LICENSE").read_bytes(), 0o644),
               (wheel.name, wheel.read_bytes(), 0o644)]
    archive = out / archive_name()
    with archive.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, mode in members:
            tar.addfile(*_member(name, data, mode))
    return archive


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def filled(text: str, archive: Path) -> str:
    """The manifest text with every platform's sha256 and uri set for ``archive``."""
    uri = f"{RELEASES}/v{version()}/{archive.name}"
    text = re.sub(r'(?m)^(\s+sha256: ).*$', lambda m: f'{m.group(1)}"{sha256(archive)}"', text)
    return re.sub(r"(?m)^(\s+uri: ).*$", lambda m: m.group(1) + uri, text)


# --- what krew checks of a manifest (validate.go, and the fields of types.go) ----------------------------------

PLUGIN_FIELDS = {"apiVersion", "kind", "metadata", "spec"}
SPEC_FIELDS = {"version", "shortDescription", "description", "caveats", "homepage", "platforms"}
PLATFORM_FIELDS = {"uri", "sha256", "selector", "files", "bin"}
SEMVER = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
WINDOWS_FORBIDDEN = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def _unknown(where: str, data: dict[str, Any], allowed: set[str]) -> list[str]:
    # krew's scanner ignores unknown fields; we refuse them, so a typo (shortDescripton) cannot pass silently
    return [f"{where}: unknown field {key!r}" for key in sorted(set(data) - allowed)]


def _selector(where: str, sel: Any) -> list[str]:
    if not isinstance(sel, dict):
        return [f"{where}.selector: nil selector is not supported"]
    errors = _unknown(f"{where}.selector", sel, {"matchLabels", "matchExpressions"})
    labels, exprs = sel.get("matchLabels"), sel.get("matchExpressions")
    if labels is None and not exprs:
        errors.append(f"{where}.selector: empty selector is not supported")
    if labels is not None and (not isinstance(labels, dict) or not labels):
        errors.append(f"{where}.selector: `matchLabels` specified but empty")
    if exprs is not None and (not isinstance(exprs, list) or not exprs):
        errors.append(f"{where}.selector: `matchExpressions` specified but empty")
    keys = list(labels or {})
    for expr in exprs or []:
        if not isinstance(expr, dict) or expr.get("operator") not in ("In", "NotIn", "Exists", "DoesNotExist"):
            errors.append(f"{where}.selector: bad matchExpression {expr!r}")
            continue
        keys.append(expr.get("key"))
        if expr["operator"] in ("In", "NotIn") and not expr.get("values"):
            errors.append(f"{where}.selector: {expr['operator']} needs values")
    errors += [f"{where}.selector: key {k!r} not supported (os, arch)" for k in keys if k not in ("os", "arch")]
    return errors


def _platform(where: str, p: Any) -> list[str]:
    if not isinstance(p, dict):
        return [f"{where}: not a mapping"]
    errors = _unknown(where, p, PLATFORM_FIELDS)
    uri = str(p.get("uri") or "")
    if not uri:
        errors.append(f"{where}: `uri` has to be set")
    elif not uri.startswith(("https://", "http://")):
        errors.append(f"{where}: `uri` {uri!r} is not an http(s) URL")
    if not re.fullmatch(r"[a-f0-9]{64}", str(p.get("sha256") or "")):
        errors.append(f"{where}: `sha256` {p.get('sha256')!r} must match ^[a-f0-9]{{64}}$")
    elif set(str(p["sha256"])) == {"0"}:
        errors.append(f"{where}: `sha256` is a placeholder of zeros")
    if not p.get("bin"):
        errors.append(f"{where}: `bin` has to be set")
    files = p.get("files")
    if files is not None and (not isinstance(files, list) or not files):
        errors.append(f"{where}: `files` has to be unspecified or non-empty")
    for op in files or []:
        if not isinstance(op, dict) or not op.get("from") or not op.get("to"):
            errors.append(f"{where}: every `files` entry needs `from` and `to`")
    return errors + _selector(where, p.get("selector"))


def validate_manifest(data: Any, name: str = "audit") -> list[str]:
    """krew's ValidatePlugin(name, plugin), plus unknown fields refused; [] when valid."""
    if not isinstance(data, dict):
        return ["the manifest is not a mapping"]
    errors = _unknown("plugin", data, PLUGIN_FIELDS)
    if data.get("apiVersion") != "krew.googlecontainertools.github.com/v1alpha2":
        errors.append(f"apiVersion {data.get('apiVersion')!r} is not krew.googlecontainertools.github.com/v1alpha2")
    if data.get("kind") != "Plugin":
        errors.append(f"kind {data.get('kind')!r} is not Plugin")
    if not re.fullmatch(r"[\w-]+", name) or name.upper() in WINDOWS_FORBIDDEN:
        errors.append(f"the plugin name {name!r} is not allowed")
    if (data.get("metadata") or {}).get("name") != name:
        errors.append(f"plugin should be named {name!r}, not {(data.get('metadata') or {}).get('name')!r}")
    spec = data.get("spec") if isinstance(data.get("spec"), dict) else {}
    errors += _unknown("spec", spec, SPEC_FIELDS)
    short = str(spec.get("shortDescription") or "")
    if not short:
        errors.append("should have a short description")
    if "\n" in short or "\r" in short:
        errors.append("should not have line breaks in short description")
    if not SEMVER.match(str(spec.get("version") or "")):
        errors.append(f"version {spec.get('version')!r} is not a semantic version with a leading v")
    platforms = spec.get("platforms") or []
    if not platforms:
        errors.append("should have a platform specified")
    for i, platform in enumerate(platforms):
        errors += _platform(f"spec.platforms[{i}]", platform)
    return errors


# --- what krew does with the archive (downloader.go extractTARGZ, install.go) ------------------------------------

def install_like_krew(archive: Path, platform: dict[str, Any], install_dir: Path) -> Path:
    """Check the sha256, unpack (regular files and folders only, no ``..``), apply ``files`` (default: all),
    and return the path ``bin`` names, which must be an executable file. Raises ValueError on what krew refuses."""
    if sha256(archive) != platform["sha256"]:
        raise ValueError(f"sha256 of {archive.name} is {sha256(archive)}, the manifest says {platform['sha256']}")
    staging = install_dir.parent / (install_dir.name + ".staging")
    staging.mkdir(parents=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            if ".." in member.name or member.name.startswith("/"):
                raise ValueError(f"suspicious path in the archive: {member.name}")
            if not (member.isfile() or member.isdir()):
                raise ValueError(f"krew handles only files and folders; {member.name} is neither")
        tar.extractall(staging, filter="tar")
    install_dir.mkdir(parents=True)
    for op in platform.get("files") or [{"from": "*", "to": "."}]:
        for path in sorted(staging.iterdir()):
            if fnmatch.fnmatch(path.name, op["from"]):
                shutil.move(str(path), install_dir / op["to"] / path.name)
    shutil.rmtree(staging)
    binary = install_dir / platform["bin"]
    if not binary.is_file():
        raise ValueError(f"can't create symbolic link, source binary ({platform['bin']}) not in the archive")
    if not binary.stat().st_mode & stat.S_IXUSR:
        raise ValueError(f"{platform['bin']} is not executable")
    return binary


def check(archive: Path, manifest: Path = MANIFEST, same_sha256: bool = True) -> list[str]:
    """krew's rules, the uri and version of this tree, and (``same_sha256``) the sha256 of ``archive``."""
    data = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    errors = validate_manifest(data)
    for i, platform in enumerate((data.get("spec") or {}).get("platforms") or []):
        if same_sha256 and platform.get("sha256") != sha256(archive):
            errors.append(f"spec.platforms[{i}].sha256 is not the built archive's: run python -m tools.krew --write")
        if not str(platform.get("uri", "")).endswith(f"/v{version()}/{archive.name}"):
            errors.append(f"spec.platforms[{i}].uri does not name {archive.name} of v{version()}")
    if (data.get("spec") or {}).get("version") != f"v{version()}":
        errors.append(f"spec.version is not v{version()} (pyproject.toml)")
    return errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.krew", description=__doc__.splitlines()[0])
    p.add_argument("command", nargs="?", choices=("build",), default="build")
    p.add_argument("--out", type=Path, default=ROOT / "dist" / "krew", help="where the wheel and archive go")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="fill sha256 and uri into plugin/krew-audit.yaml")
    mode.add_argument("--check", action="store_true", help="exit 1 when plugin/krew-audit.yaml does not hold")
    a = p.parse_args(argv)
    archive = build(a.out)
    print(f"{archive} sha256 {sha256(archive)}")
    if a.write:
        MANIFEST.write_text(filled(MANIFEST.read_text(encoding="utf-8"), archive), encoding="utf-8")
    if a.check:
        errors = check(archive)
        for error in errors:
            sys.stderr.write(f"plugin/krew-audit.yaml: {error}\n")
        return 1 if errors else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
