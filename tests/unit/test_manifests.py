"""Every YAML document under kind/ (and deploy/, if added) is valid, without a cluster.

Kubernetes objects are validated strictly (unknown fields are errors) against the bundled OpenAPI schemas of
kubernetes-validate for K8S_VERSION. What is not a Kubernetes API object gets its own check: kind's Cluster
config, the apiserver's audit Policy, and custom resources (their CRD must be here too).
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
    if group == "kind.x-k8s.io":
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
    assert ports == {("forward", 24224), ("http", 8080)}
