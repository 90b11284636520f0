"""chart/kube-audit-tailer, rendered and validated offline.

Helm is not installable here (no Debian, PyPI or npm package has it), so tests/helpers/helmlite.py renders the
chart (the Go-template subset it uses, strictly) as `helm template` would, and every rendered object is validated
strictly against Kubernetes' OpenAPI schemas (kubernetes-validate, like test_manifests.py). On top: values
against values.schema.json (what Helm checks), container args through the tailer's own parser, names that must
agree (Service selector, ServiceAccount, PVC, RBAC subject), the alerts through promtool, and the apiserver
sidecar's values example.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tailer.metrics import TailerMetrics
from tests.helpers.helmlite import Renderer, TemplateError, template
from tools.flagtable import PARSERS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "chart" / "kube-audit-tailer"
EXAMPLES = ROOT / "chart" / "examples"
K8S_VERSION = "1.34.0"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
SCHEMA = __import__("json").loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())

CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "postgresql-example": yaml.safe_load((EXAMPLES / "values-postgresql.yaml").read_text()),
    "stdout-only": {"store": {"type": "none"}, "configmaps": {"enabled": False}, "rbac": {"readerRole": False}},
    "sqlite-emptydir": {"store": {"sqlite": {"persistence": {"enabled": False}}}, "serviceAccount": {"name": "x"}},
    "token-file": {"api": {"auth": "token-file", "tokenFileSecret": "tokens"}, "extraArgs": ["--watch-poll=2s"]},
    "apiservice-insecure": {"apiService": {"enabled": True, "insecureSkipTLSVerify": True}, "alerts": {"enabled": True}},
}


def render(values: dict[str, Any], release: str = "kube-audit") -> list[dict[str, Any]]:
    return template(CHART, values, release=release, namespace="kube-audit")


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "kube-audit-tailer" and chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"]) and chart["appVersion"] == VERSION


@pytest.mark.parametrize("case", CASES)
def test_values_match_the_schema(case: str) -> None:
    from tests.helpers.helmlite import merge

    jsonschema.Draft7Validator(SCHEMA).validate(merge(DEFAULTS, CASES[case]))


def test_schema_refuses_bad_values() -> None:
    from tests.helpers.helmlite import merge

    for bad in ({"store": {"type": "mysql"}}, {"replicas": 0}, {"store": {"retention": {"bytes": "lots"}}},
                {"configmaps": {"track": ["deployments"]}}, {"api": {"auth": "open"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft7Validator(SCHEMA).validate(merge(DEFAULTS, bad))


@pytest.mark.parametrize("case", CASES)
def test_rendered_objects_are_valid(case: str) -> None:
    import kubernetes_validate

    docs = render(CASES[case])
    assert {"Deployment", "Service", "ClusterRole", "ClusterRoleBinding"} <= {d["kind"] for d in docs}
    for doc in docs:
        if doc["kind"] == "PrometheusRule":
            check_prometheus_rule(doc)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("case", CASES)
def test_tailer_args_and_env_are_the_tailers(case: str) -> None:
    deployment = by_kind(render(CASES[case]), "Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["audit-tailer"]
    parser = PARSERS["tailer"]()
    args = parser.parse_args(container["args"])
    for env in container.get("env", []):
        assert env["name"].removeprefix("AUDIT_TAILER_").lower() in vars(args), env["name"]
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    for path in (args.shared_key_file, args.tls_cert, args.tls_ca, args.token_file):  # files come from mounts
        if path:
            assert str(Path(path).parent) in mounts, path
    assert args.listen[1] == container["ports"][0]["containerPort"]


def test_names_agree() -> None:
    docs = render(CASES["defaults"])
    deployment, service = by_kind(docs, "Deployment")[0], by_kind(docs, "Service")[0]
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"forward": 24224, "http": 8080}
    account = by_kind(docs, "ServiceAccount")[0]["metadata"]["name"]
    assert pod["spec"]["serviceAccountName"] == account == "kube-audit-tailer"
    binding = by_kind(docs, "ClusterRoleBinding")[0]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "kube-audit"}]
    claim = pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert by_kind(docs, "PersistentVolumeClaim")[0]["metadata"]["name"] == claim
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one SQLite writer at a time
    assert by_kind(render({}, release="audit-tailer"), "Service")[0]["metadata"]["name"] == "audit-tailer"


def test_replicas_share_postgresql() -> None:
    docs = render(CASES["postgresql-example"])
    deployment = by_kind(docs, "Deployment")[0]
    assert deployment["spec"]["replicas"] == 3 and "strategy" not in deployment["spec"]
    assert not by_kind(docs, "PersistentVolumeClaim")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["name"] == "AUDIT_TAILER_STORE" and env[0]["valueFrom"]["secretKeyRef"]["name"]
    rules = by_kind(docs, "ClusterRole")[0]["rules"]
    assert {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]} in rules
    service = by_kind(docs, "APIService")[0]
    assert service["spec"]["service"] == {"name": "kube-audit-tailer", "namespace": "kube-audit", "port": 443}


def test_apiservice_is_off_by_default() -> None:
    assert DEFAULTS["apiService"]["enabled"] is False
    assert not by_kind(render({}), "APIService") and not by_kind(render({}), "PrometheusRule")


@pytest.mark.parametrize(("values", "message"), [
    ({"replicas": 2}, "replicas > 1 needs store.type postgresql"),
    ({"store": {"type": "postgresql"}}, "needs store.postgresql.urlSecret"),
    ({"api": {"auth": "token-file"}}, "needs api.tokenFileSecret"),
    ({"apiService": {"enabled": True}}, "apiService.caBundle is needed"),
])
def test_impossible_values_fail_at_install(values: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        render(values)


def check_prometheus_rule(doc: dict[str, Any]) -> None:
    """prometheus-operator's PrometheusRule (no CRD here): its shape, and the rules as promtool checks them."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(doc["spec"]) == {"groups"}
    names = set(TailerMetrics().registry._names_to_collectors)  # every series name the tailer exposes
    for group in doc["spec"]["groups"]:
        for rule in group["rules"]:
            for metric in re.findall(r"\b(tailer_[a-z_]+)", rule["expr"]):
                assert metric in names, f"{rule['alert']}: {metric} is not a tailer metric"
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is not installed: ./run test installs it"
    proc = subprocess.run([promtool, "check", "rules", "/dev/stdin"], input=yaml.safe_dump(doc["spec"]),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_apiserver_sidecar_values_example() -> None:
    import kubernetes_validate

    values = yaml.safe_load((EXAMPLES / "apiserver-sidecar-values.yaml").read_text())["auditForwarder"]
    container = values["container"]
    assert container["command"] == ["audit-forwarder"]
    args = PARSERS["forwarder"]().parse_args(container["args"])
    service = by_kind(render({}), "Service")[0]
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "forward")
    assert args.tailer == (f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc", port)
    apiserver = {"name": "kube-apiserver", "image": "registry.k8s.io/kube-apiserver:v1.34.0",
                 "command": ["kube-apiserver", f"--audit-log-path={args.audit_log_path}"],
                 "volumeMounts": [{"name": "audit-log", "mountPath": str(Path(args.audit_log_path).parent)}]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kube-apiserver"},
           "spec": {"containers": [apiserver, container], "volumes": values["volumes"]}}
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    volumes = {v["name"] for v in values["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for path in (args.tls_ca, args.shared_key_file, args.proxy_ca, args.position_file):
        assert str(Path(path).parent) in mounts, path


# --- the renderer itself: what it does is what text/template does -------------------------------------------

@pytest.mark.parametrize(("source", "data", "expected"), [
    ("a {{- ` b ` -}} c", {}, "a b c"),
    ("x\n{{- if .a }}\nA{{ else if .b }}\nB{{ else }}\nC{{ end }}", {"b": 1}, "x\nB"),
    ("{{ range $i, $v := .l }}{{ $i }}={{ $v }};{{ end }}", {"l": ["p", "q"]}, "0=p;1=q;"),
    ("{{ range .m }}{{ . }}{{ end }}", {"m": {"b": 2, "a": 1}}, "12"),
    ("{{ with .n }}{{ .k }}{{ else }}none{{ end }}", {"n": {}}, "none"),
    ("{{ .a | default \"d\" | quote }}", {}, '"d"'),
    ("{{ toYaml .v | nindent 2 }}", {"v": {"k": [1]}}, "\n  k:\n  - 1"),
    ("{{/* comment */}}{{ printf \"%s-%d\" .s 3 }}", {"s": "x"}, "x-3"),
    ("{{ if and (eq .a 1) (not .b) }}yes{{ end }}", {"a": 1}, "yes"),
])
def test_renderer_matches_text_template(source: str, data: dict[str, Any], expected: str) -> None:
    r = Renderer()
    assert r.render(r.load(source), data, data, {"$": data}) == expected


@pytest.mark.parametrize("source", ["{{ .a.b }}", "{{ lookup \"v1\" }}", "{{ if .a }}x", "{{ end }}"])
def test_renderer_is_strict(source: str) -> None:
    r = Renderer()
    with pytest.raises(TemplateError):
        r.render(r.load(source), {}, {}, {"$": {}})
