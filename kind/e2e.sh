#!/usr/bin/env bash
# End to end on a real cluster (kind), everything in the cluster, from the image this repository builds:
#   1. a kind cluster whose apiserver writes an audit log (kind/cluster.yaml, kind/audit-policy.yaml)
#   2. the image (Dockerfile), built and loaded into the kind node
#   3. the tailer's namespace, RBAC (kind/tailer-rbac.yaml), its aggregated API (kind/api-install.sh:
#      certificate, kind/tailer-api.yaml, caBundle), Deployment and Service (kind/tailer.yaml),
#      the forwarder on the control-plane node reading the apiserver's audit log (kind/forwarder.yaml)
#   4. a CRD and a custom resource, created, patched, deleted
#   5. checks: the tailer printed the events, the audit ConfigMap holds them (ownerReference, annotation),
#      `kubectl audit` shows them, the tailer's own writes are not tracked, garbage collection
# Needs: docker (with a daemon), kind, kubectl, and ./run's .venv for the kubectl-audit plugin.
# KEEP=1 keeps the cluster; CLUSTER names it (default kaf-e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CLUSTER=${CLUSTER:-kaf-e2e}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
IMAGE=kube-audit-forwarder:$VERSION  # the tag kind/tailer.yaml and kind/forwarder.yaml use
WORK=$(mktemp -d)

cleanup() {
  [ "${KEEP:-}" = 1 ] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "e2e: FAIL: $*" >&2
  kubectl -n kube-audit get pods -o wide >&2 || true
  kubectl -n kube-audit logs deploy/kube-audit-tailer --tail 30 >&2 || true
  kubectl -n kube-audit logs ds/kube-audit-forwarder --tail 30 >&2 || true
  exit 1
}
# Polls a condition with a deadline: the apiserver flushes its log, the forwarder batches, the tailer
# batches ConfigMap writes; there is nothing to wait on but the outcome.
eventually() {
  local what=$1; shift
  for _ in $(seq 90); do
    if "$@"; then return 0; fi
    sleep 1
  done
  fail "timed out waiting for: $what"
}

echo "e2e: cluster"
sed "s#AUDIT_POLICY_DIR#$ROOT/kind#" kind/cluster.yaml > "$WORK/cluster.yaml"
kind create cluster --name "$CLUSTER" --config "$WORK/cluster.yaml" --wait 120s
export KUBECONFIG=$WORK/admin.kubeconfig
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG"

echo "e2e: image $IMAGE"
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

echo "e2e: tailer, forwarder, CRD"
kubectl apply -f kind/tailer-rbac.yaml -f kind/example-crd.yaml
kind/api-install.sh
kubectl apply -f kind/tailer.yaml -f kind/forwarder.yaml
kubectl wait --for condition=established --timeout=60s crd/databases.example.com
kubectl -n kube-audit rollout status deployment/kube-audit-tailer --timeout=120s || fail "tailer not ready"
kubectl -n kube-audit rollout status daemonset/kube-audit-forwarder --timeout=120s || fail "forwarder not ready"

export PATH="$ROOT/.venv/bin:$PATH"  # kubectl finds the plugin as kubectl-audit on PATH
audit_shows() { kubectl audit databases.example.com orders -n default 2>/dev/null | grep -Eq "$1"; }
# the tailer's stdout: one audit event per line, exactly as the apiserver wrote it
tailer_printed() {
  kubectl -n kube-audit logs deploy/kube-audit-tailer 2>/dev/null | python3 -c '
import json, sys
verb = sys.argv[1]
for line in sys.stdin:
    try:
        e = json.loads(line)
    except ValueError:
        continue
    ref = e.get("objectRef") or {}
    if (e.get("verb"), ref.get("resource"), ref.get("name"), e.get("stage")) == (verb, "databases", "orders", "ResponseComplete"):
        sys.exit(0)
sys.exit(1)' "$1"
}

echo "e2e: create, patch"
kubectl apply -f - <<'YAML'
apiVersion: example.com/v1
kind: Database
metadata: {name: orders, namespace: default}
spec: {replicas: 1, version: "16"}
YAML
eventually "the tailer printing the create" tailer_printed create
eventually "kubectl audit showing the create" audit_shows "create +created"
kubectl patch database orders --type merge -p '{"spec":{"replicas":3}}'
eventually "the tailer printing the patch" tailer_printed patch
eventually "kubectl audit showing the patch" audit_shows "patch +spec.replicas: 1 -> 3"

echo "e2e: the aggregated API"
api_available() { [ "$(kubectl get apiservice v1alpha1.audit.kube-audit-forwarder.io \
  -o jsonpath='{.status.conditions[?(@.type=="Available")].status}')" = True ]; }
eventually "the APIService available" api_available
api_lists() { kubectl get auditevents -n default --field-selector objectRef.name=orders 2>/dev/null | grep -q patch; }
eventually "kubectl get auditevents listing the patch" api_lists
kubectl get auditevents -n default --field-selector objectRef.resource=databases
kubectl api-resources --api-group=audit.kube-audit-forwarder.io | grep -q auditevents || fail "api-resources"
kubectl get --raw /apis/audit.kube-audit-forwarder.io/v1alpha1/namespaces/default/databases.example.com/orders/versions \
  > /dev/null || fail "object versions through the aggregator"

echo "e2e: the ConfigMap"
CM=$(kubectl get database orders -o jsonpath='{.metadata.annotations.audit\.kube-audit-forwarder\.io/configmap}')
[ "$CM" = audit-databases-orders ] || fail "annotation is '$CM'"
OWNER=$(kubectl get configmap "$CM" -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')
[ "$OWNER" = Database/orders ] || fail "ownerReference is '$OWNER'"
kubectl get configmap "$CM" -o jsonpath='{.data.entries\.json}' | python3 -c '
import json, sys
entries = json.load(sys.stdin)
verbs = [e["verb"] for e in entries]
assert "create" in verbs and "patch" in verbs, entries'
# the tailer's own annotation patch is audited but must not show up (no feedback loop)
if kubectl audit databases.example.com orders -n default | grep -q "kube-audit-tailer"; then fail "own writes tracked"; fi
kubectl audit db orders -n default
kubectl audit db orders -n default -o json > /dev/null

echo "e2e: delete; the ConfigMap goes with the object"
kubectl delete database orders
eventually "the tailer printing the delete" tailer_printed delete
cm_gone() { ! kubectl get configmap "$CM" >/dev/null 2>&1; }
eventually "garbage collection of ConfigMap $CM" cm_gone
if kubectl -n kube-audit logs ds/kube-audit-forwarder | grep -q '"event": "gap"'; then fail "the forwarder reported a gap"; fi
echo "e2e: PASS"
