"""docker-compose.yml, the Dockerfile and the kind manifests agree with the code: flags, env vars, ports, images.

No Docker here: the files are parsed and every command is run through the program's own argparse parser.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.flagtable import PARSERS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
IMAGE = f"kube-audit-forwarder:{VERSION}"
CONTRACT = {"forward": 24224, "tailer_http": 8080, "forwarder_metrics": 9880}


forwarder_parser = PARSERS["forwarder"]
tailer_parser = PARSERS["tailer"]


def writer_parser() -> argparse.ArgumentParser:
    from kube_audit.writer import build_parser

    return build_parser()


# how a container command starts -> (its parser, the env var prefix it reads)
PROGRAMS: dict[tuple[str, ...], tuple[Callable[[], argparse.ArgumentParser], str | None]] = {
    ("audit-forwarder",): (forwarder_parser, "AUDIT_FORWARDER_"),
    ("audit-tailer",): (tailer_parser, "AUDIT_TAILER_"),
    ("python", "-m", "kube_audit.writer"): (writer_parser, None),
}


def program(command: list[str]) -> tuple[tuple[str, ...], list[str]]:
    for start in PROGRAMS:
        if tuple(command[: len(start)]) == start:
            return start, command[len(start):]
    raise AssertionError(f"{command[:3]} is none of the image's programs {list(PROGRAMS)}")


def our_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in SERVICES.items() if s.get("image") == IMAGE}


def flag_value(args: list[str], flag: str) -> str:
    for i, arg in enumerate(args):
        if arg == flag:
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {args}")


def port_of(hostport: str) -> int:
    return int(hostport.rpartition(":")[2])


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


def test_compose_runs_each_program_of_the_image() -> None:
    starts = {program(s["command"])[0] for s in our_services().values()}
    assert starts == set(PROGRAMS)
    assert all(s.get("build") == "." for s in our_services().values())


@pytest.mark.parametrize("name", sorted(our_services()))
def test_compose_command_flags_exist_and_parse(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    start, args = program(SERVICES[name]["command"])
    factory, prefix = PROGRAMS[start]
    known = options(factory())
    unknown = [a.split("=")[0] for a in args if a.startswith("-") and a.split("=")[0] not in known]
    assert unknown == [], f"{name}: {unknown} are not flags of {' '.join(start)}"
    env = {k: str(v) for k, v in (SERVICES[name].get("environment") or {}).items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parser = factory()  # EnvParser reads the environment while it is built: a bad value exits here
    if prefix:
        env_names = {parser.env_name(o) for o in known if o.startswith("--")}  # type: ignore[attr-defined]
        ours = {k for k in env if k.startswith(prefix)}
        assert ours - env_names == set(), f"{name}: env vars that are no flag: {sorted(ours - env_names)}"
        assert {k for k in env if k.startswith("AUDIT_")} == ours, f"{name}: env vars of the other daemon"
    parser.parse_args(args)  # values too: a bad one exits with status 2


def test_env_vars_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # what compose (and kind/forwarder.yaml) relies on: flags in argument groups read their env var
    for key, value in SERVICES["forwarder"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    a = forwarder_parser().parse_args(["--tailer", "t:1"])
    assert a.read_from_head is True and a.log_level == "info"


def test_ports_follow_the_contract() -> None:
    tailer = program(SERVICES["tailer"]["command"])[1]
    forwarder = program(SERVICES["forwarder"]["command"])[1]
    assert port_of(flag_value(tailer, "--listen")) == CONTRACT["forward"]
    assert port_of(flag_value(tailer, "--http-listen")) == CONTRACT["tailer_http"]
    assert port_of(flag_value(forwarder, "--http-listen")) == CONTRACT["forwarder_metrics"]
    assert flag_value(forwarder, "--tailer") == f"tailer:{CONTRACT['forward']}"
    assert SERVICES["tailer"]["ports"] == [f"{CONTRACT['tailer_http']}:{CONTRACT['tailer_http']}"]
    assert SERVICES["forwarder"]["ports"] == [f"{CONTRACT['forwarder_metrics']}:{CONTRACT['forwarder_metrics']}"]
    # and they are the programs' defaults
    defaults = {"listen": tailer_parser().get_default("listen"), "http": tailer_parser().get_default("http_listen"),
                "metrics": forwarder_parser().get_default("http_listen")}
    assert defaults == {"listen": ("0.0.0.0", 24224), "http": ("0.0.0.0", 8080), "metrics": ("0.0.0.0", 9880)}


def test_the_proxy_chain_leads_to_the_tailer() -> None:
    forwarder = program(SERVICES["forwarder"]["command"])[1]
    proxy = flag_value(forwarder, "--proxy")
    assert re.fullmatch(r"http-connect://proxy:\d+", proxy) and "proxy" in SERVICES
    stunnel = (ROOT / "compose" / "stunnel.conf").read_text()
    assert f"accept = 0.0.0.0:{port_of(proxy)}" in stunnel
    tinyproxy = (ROOT / "compose" / "tinyproxy.conf").read_text()
    upstream = re.search(r"^connect = (\S+)$", stunnel, re.M).group(1)  # type: ignore[union-attr]
    assert upstream.split(":")[0] in SERVICES
    assert f"Port {port_of(upstream)}" in tinyproxy
    assert f"ConnectPort {CONTRACT['forward']}" in tinyproxy
    # the certificates the forwarder and stunnel name are the ones init-certs makes
    made = set(re.findall(r"^\s*issue (\w+) ", (ROOT / "compose" / "init-certs.sh").read_text(), re.M))
    assert made == {"proxy", "forwarder"}
    for flag, name in (("--proxy-cert", "forwarder.crt"), ("--proxy-key", "forwarder.key"), ("--proxy-ca", "ca.crt")):
        assert flag_value(forwarder, flag) == f"/certs/{name}"


def test_postgresql_store_follows_the_tailer_flags() -> None:
    tailer = SERVICES["tailer"]["command"]
    compose_text = (ROOT / "docker-compose.yml").read_text()
    if "--store" in options(tailer_parser()):
        hint = "audit-tailer has --store now: uncomment the marked --store line, depends_on and postgres service"
        assert any(a.startswith("--store=postgresql://") for a in tailer), f"docker-compose.yml: {hint}"
        assert "postgres" in SERVICES, f"docker-compose.yml: {hint}"
    else:
        assert "--store" not in tailer and "postgres" not in SERVICES
        assert "# - --store=postgresql://" in compose_text  # the marked line to enable later


def test_dockerfile_builds_what_compose_and_kind_run() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 65532:65532" in dockerfile
    assert re.search(r"^EXPOSE 24224 8080 9880$", dockerfile, re.M)
    assert PYPROJECT["project"]["requires-python"] == ">=3.11" and "python:3.11-slim" in dockerfile
    assert set(PYPROJECT["project"]["scripts"]) == {"audit-forwarder", "audit-tailer", "kubectl-audit"}
    copied = set(re.findall(r"^COPY (\w+)/ ", dockerfile, re.M))
    packages = {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert copied == packages  # every package of the wheel, kube_audit.writer included
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert all(f"!{p}/" in ignore for p in packages)
    # the final stage has no build tools
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    assert not re.search(r"gcc|build-essential|pip wheel", final)


def test_the_image_keeps_the_async_client_and_only_kube_py_imports_kubernetes() -> None:
    assert "kubernetes/aio" not in re.sub(r"#.*", "", (ROOT / "Dockerfile").read_text())  # not deleted
    importers = set()
    for package in ("fluent_forward", "kube_audit", "forwarder", "tailer", "kubectl_audit"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            blocking = re.search(r"^\s*(from kubernetes(\.client|\.config)? import|import kubernetes\.(client|config))",
                                 text, re.M)
            # the daemons use kubernetes.aio; only the plugin's client loads kubeconfigs with the blocking one
            assert not blocking or path.relative_to(ROOT).as_posix() == "kube_audit/kube/blocking.py", path
            if re.search(r"^\s*(from|import) kubernetes\b", text, re.M):
                importers.add(path.relative_to(ROOT).as_posix())
    assert importers == {"kube_audit/kube/aio.py", "kube_audit/kube/blocking.py"}


def manifest_containers() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted([*(ROOT / "kind").glob("*.yaml"), *(ROOT / "deploy").glob("*.yaml")]):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") not in ("Pod", "Deployment", "DaemonSet", "StatefulSet"):
                continue
            pod = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
            out += [(path.name, c) for c in pod["containers"]]
    return out


def test_manifests_use_this_version_of_the_image() -> None:
    ours = [(name, c) for name, c in manifest_containers() if c["image"].startswith("kube-audit-forwarder:")]
    assert {name for name, _ in ours} >= {"forwarder.yaml", "tailer.yaml", "apiserver-sidecar.yaml"}
    assert {c["image"] for _, c in ours} == {IMAGE}
    assert "IMAGE=kube-audit-forwarder:$VERSION" in (ROOT / "kind" / "e2e.sh").read_text()


def test_manifest_commands_and_env_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = 0
    for name, container in manifest_containers():
        if not container["image"].startswith("kube-audit-forwarder:"):
            continue
        start, args = program([*container["command"], *container.get("args", [])])
        factory, _ = PROGRAMS[start]
        parser = factory()
        env_names = {parser.env_name(o) for o in options(parser) if o.startswith("--")}  # type: ignore[attr-defined]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert set(env) <= env_names, (name, set(env) - env_names)
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            factory().parse_args(args)
        checked += 1
    assert checked == 3
