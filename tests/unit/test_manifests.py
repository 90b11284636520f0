"""Every YAML document under kind/ (and deploy/, if added) is valid, without a cluster.

Kubernetes objects are validated strictly (unknown fields are errors) against the bundled OpenAPI schemas of
kubernetes-validate for K8S_VERSION. What is not a Kubernetes API object gets its own check: kind's Cluster
config, the apiserver's audit Policy, custom resources (their CRD must be here too), and Prometheus rules
(a PrometheusRule, plain rules files: promtool).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.34.0"
FOLDERS = ("kind", "deploy")
AUDIT_LEVELS = {"None", "Metadata", "Request", "RequestResponse"}


def documents() -> list[tuple[str, int, dict[str, Any]]]:
    out = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).glob("**/*.y*ml")):
            with path.open(encoding="utf-8") as fh:
                for index, doc in enumerate(yaml.safe_load_all(fh)):
                    if doc is not None:
                        out.append((str(path.relative_to(ROOT)), index, doc))
    return out


DOCS = documents()
CRDS = {(d["spec"]["group"], d["spec"]["names"]["kind"]): d for _, _, d in DOCS
        if d.get("kind") == "CustomResourceDefinition"}


def _id(doc: tuple[str, int, dict[str, Any]]) -> str:
    return f"{doc[0]}#{doc[1]}:{doc[2].get('kind')}"


def test_there_is_something_to_validate() -> None:
    kinds = {d.get("kind") for _, _, d in DOCS}
    assert {"Deployment", "Service", "DaemonSet", "ClusterRole", "CustomResourceDefinition", "Cluster"} <= kinds


@pytest.mark.parametrize("doc", DOCS, ids=[_id(d) for d in DOCS])
def test_document_is_valid(doc: tuple[str, int, dict[str, Any]]) -> None:
    _, _, data = doc
    group = data.get("apiVersion", "").rpartition("/")[0]
    if "kind" not in data and ("groups" in data or "rule_files" in data):
        return  # a Prometheus rules file or its promtool test: tests/unit/test_alert_rules.py runs promtool
    if group == "monitoring.coreos.com":
        from tests.unit.test_chart import check_prometheus_rule

        check_prometheus_rule(data)  # prometheus-operator's PrometheusRule (no CRD here)
    elif group == "kind.x-k8s.io":
        check_kind_cluster(data)
    elif group == "audit.k8s.io":
        check_audit_policy(data)
    elif (group, data.get("kind")) in CRDS:
        check_custom_resource(data)
    else:
        import kubernetes_validate

        kubernetes_validate.validate(data, K8S_VERSION, strict=True)


def check_kind_cluster(data: dict[str, Any]) -> None:
    """kind's own config (not served by any apiserver): its shape, and the kubeadm patches it carries."""
    assert data["apiVersion"] == "kind.x-k8s.io/v1alpha4" and data["kind"] == "Cluster"
    assert set(data) <= {"kind", "apiVersion", "name", "nodes", "networking", "featureGates", "runtimeConfig",
                         "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902", "containerdConfigPatches"}
    for node in data["nodes"]:
        assert node["role"] in ("control-plane", "worker")
        assert set(node) <= {"role", "image", "extraMounts", "extraPortMappings", "labels", "kubeadmConfigPatches",
                             "kubeadmConfigPatchesJSON6902"}
        for mount in node.get("extraMounts", []):
            assert {"hostPath", "containerPath"} <= set(mount)
            assert set(mount) <= {"hostPath", "containerPath", "readOnly", "selinuxRelabel", "propagation"}
            # e2e.sh puts the absolute path of kind/ in place of AUDIT_POLICY_DIR
            local = mount["hostPath"].replace("AUDIT_POLICY_DIR", str(ROOT / "kind"))
            assert Path(local).exists(), mount
        for patch in node.get("kubeadmConfigPatches", []):
            assert yaml.safe_load(patch)["kind"] in ("ClusterConfiguration", "InitConfiguration",
                                                    "JoinConfiguration", "KubeletConfiguration")


def check_audit_policy(data: dict[str, Any]) -> None:
    """The apiserver's --audit-policy-file: audit.k8s.io/v1 Policy, rules with known levels and fields."""
    assert data["apiVersion"] == "audit.k8s.io/v1" and data["kind"] == "Policy"
    assert set(data) <= {"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"}
    assert set(data.get("omitStages", [])) <= {"RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"}
    assert data["rules"]
    for rule in data["rules"]:
        assert rule["level"] in AUDIT_LEVELS
        assert set(rule) <= {"level", "users", "userGroups", "verbs", "resources", "namespaces",
                             "nonResourceURLs", "omitStages", "omitManagedFields"}
        for res in rule.get("resources", []):
            assert set(res) <= {"group", "resources", "resourceNames"}


def check_custom_resource(data: dict[str, Any]) -> None:
    """An object of a CRD defined here: a served version of it, and a name."""
    group, version = data["apiVersion"].split("/")
    crd = CRDS[(group, data["kind"])]
    assert version in {v["name"] for v in crd["spec"]["versions"] if v.get("served")}
    assert data["metadata"]["name"]


def test_strict_validation_rejects_an_unknown_field() -> None:
    import kubernetes_validate

    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
               "spec": {"ports": [{"port": 1}], "selectr": {"a": "b"}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, K8S_VERSION, strict=True)


def test_forwarder_reads_where_the_apiserver_writes() -> None:
    cluster = next(d for _, _, d in DOCS if d.get("kind") == "Cluster")
    patch = yaml.safe_load(cluster["nodes"][0]["kubeadmConfigPatches"][0])
    log_path = patch["apiServer"]["extraArgs"]["audit-log-path"]
    forwarder = next(d for _, _, d in DOCS if d.get("kind") == "DaemonSet")
    pod = forwarder["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert f"--audit-log-path={log_path}" in args
    host_dirs = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert str(Path(log_path).parent) in host_dirs
    # the control-plane node only
    assert "node-role.kubernetes.io/control-plane" in pod["nodeSelector"]


def test_tailer_service_ports_follow_the_contract() -> None:
    service = next(d for _, _, d in DOCS if d.get("kind") == "Service" and d["metadata"]["name"] == "kube-audit-tailer")
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {("forward", 24224), ("http", 8080)}
    deployment = next(d for _, _, d in DOCS if d.get("kind") == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kube-audit-tailer"
    assert deployment["metadata"]["namespace"] == "kube-audit"
    ports = {(p["name"], p["containerPort"]) for p in pod["containers"][0]["ports"]}
    assert ports == {("forward", 24224), ("http", 8080), ("api", 8443)}


def test_the_api_service_reaches_the_tailer_over_tls() -> None:
    """The APIService names the Service, whose port targets the container port the tailer serves HTTPS on,
    with a certificate from the mounted Secret that kind/api-install.sh creates."""
    from kube_audit.contract import API_GROUP, API_VERSION
    from tailer import cli

    (apiservice,) = [d for _, _, d in DOCS if d.get("kind") == "APIService"]
    assert apiservice["metadata"]["name"] == f"{API_VERSION.rpartition('/')[2]}.{API_GROUP}"
    ref = apiservice["spec"]["service"]
    service = next(d for _, _, d in DOCS if d.get("kind") == "Service" and d["metadata"]["name"] == ref["name"])
    assert service["metadata"]["namespace"] == ref["namespace"]
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == ref["port"]]
    deployment = next(d for _, _, d in DOCS if d.get("kind") == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    (target,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    args = cli.build_parser().parse_args(container["args"])  # the files exist only in the pod
    assert args.api_listen[1] == target["containerPort"] and args.api_tls_key
    assert args.requestheader_from_cluster and args.api_auth == "auto"  # auto: kubernetes (TokenReview, SAR)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert args.api_tls_cert.startswith(mounts["api-tls"]) and secrets["api-tls"] == "kube-audit-api-tls"
    bindings = {(d["kind"], d["roleRef"]["name"]) for _, _, d in DOCS if d.get("kind", "").endswith("Binding")}
    assert {("ClusterRoleBinding", "system:auth-delegator"),
            ("RoleBinding", "extension-apiserver-authentication-reader")} <= bindings
    viewer = next(d for _, _, d in DOCS if d.get("kind") == "ClusterRole" and d["metadata"]["name"] == "audit-viewer")
    # the kube-apiserver authorizes an object view (.../deployments.apps/web/versions) as subresource
    # "versions" of resource "deployments.apps" in our group, before it proxies the request
    views = ["*/" + v for v in ("versions", "spechistory", "diff", "bisect")]
    assert viewer["rules"] == [{"apiGroups": [API_GROUP], "resources": ["auditevents", *views],
                                "verbs": ["get", "list", "watch"]},
                               {"apiGroups": [API_GROUP], "resources": ["sources", "verify"], "verbs": ["get", "list"]}]


def test_api_certs_script_makes_a_certificate_the_aggregator_accepts(tmp_path: Path) -> None:
    import shutil
    import ssl
    import subprocess

    from cryptography import x509

    assert shutil.which("openssl"), "openssl is needed by kind/api-certs.sh"
    subprocess.run([str(ROOT / "kind" / "api-certs.sh"), str(tmp_path), "kube-audit"], check=True, timeout=60)
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "kube-audit-api.kube-audit.svc" in names  # what the kube-aggregator dials and checks
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    ctx.load_cert_chain(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))  # the key matches
    assert not (tmp_path / "ca.key").exists()
