#!/usr/bin/env bash
# End-to-end check of the audit ConfigMap path on a real cluster (kind): the same tailer code as the tests.
#   1. a kind cluster whose apiserver writes an audit log (kind/cluster.yaml, kind/audit-policy.yaml)
#   2. the tailer's RBAC (kind/tailer-rbac.yaml), a CRD and a custom resource
#   3. the tailer on this machine, as its service account (a token kubeconfig), so RBAC is what is tested
#   4. the audit log shipped to it (tests/sender.py stands in until the forwarder static pod lands in kind/)
#   5. checks: the ConfigMap, its ownerReference, the annotation, `kubectl audit` output, garbage collection
# Needs: docker, kind, kubectl, and ./run's .venv (python3 -m venv .venv && .venv/bin/pip install -e '.[test]').
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CLUSTER=${CLUSTER:-kaf-e2e}
PY=${PY:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d)
TAILER_PID=

cleanup() {
  [ -n "$TAILER_PID" ] && kill "$TAILER_PID" 2>/dev/null || true
  [ "${KEEP:-}" = 1 ] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "e2e: FAIL: $*" >&2; [ -f "$WORK/tailer.err" ] && tail -n 30 "$WORK/tailer.err" >&2; exit 1; }

echo "e2e: cluster"
sed "s#AUDIT_POLICY_DIR#$ROOT/kind#" kind/cluster.yaml > "$WORK/cluster.yaml"
kind create cluster --name "$CLUSTER" --config "$WORK/cluster.yaml" --wait 120s
export KUBECONFIG=$WORK/admin.kubeconfig
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG"

echo "e2e: RBAC, CRD"
kubectl apply -f kind/tailer-rbac.yaml -f kind/example-crd.yaml
kubectl wait --for condition=established --timeout=60s crd/databases.example.com

echo "e2e: the tailer, as system:serviceaccount:kube-audit:kube-audit-tailer"
TOKEN=$(kubectl -n kube-audit create token kube-audit-tailer --duration 1h)
SERVER=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d > "$WORK/ca.crt"
TAILER_KC=$WORK/tailer.kubeconfig
KUBECONFIG=$TAILER_KC kubectl config set-cluster kind --server "$SERVER" --certificate-authority "$WORK/ca.crt" >/dev/null
KUBECONFIG=$TAILER_KC kubectl config set-credentials tailer --token "$TOKEN" >/dev/null
KUBECONFIG=$TAILER_KC kubectl config set-context tailer --cluster kind --user tailer >/dev/null
KUBECONFIG=$TAILER_KC kubectl config use-context tailer >/dev/null
PORT=${PORT:-24299}
HTTP_PORT=${HTTP_PORT:-8099}
"$PY" -m tailer.cli --listen "127.0.0.1:$PORT" --http-listen "127.0.0.1:$HTTP_PORT" --stdout false \
  --kubeconfig "$TAILER_KC" --service-account system:serviceaccount:kube-audit:kube-audit-tailer \
  --configmap-flush-interval 500ms 2> "$WORK/tailer.err" &
TAILER_PID=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null && break; sleep 0.2; done
grep -q '"configmaps_on"' "$WORK/tailer.err" || fail "the ConfigMap sink did not start"

# Sends the whole audit log each time: resends are harmless (ConfigMap entries merge by auditID).
ship() {
  docker exec "$CLUSTER-control-plane" cat /var/log/kubernetes/audit/audit.log > "$WORK/audit.log"
  PYTHONPATH=$ROOT "$PY" - "$PORT" "$WORK/audit.log" <<'PY'
import json, sys
from tests.sender import Sender
port, path = int(sys.argv[1]), sys.argv[2]
events = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
with Sender("127.0.0.1", port) as sender:
    for i in range(0, len(events), 200):
        sender.send_chunk(events[i : i + 200])
PY
}

# Polls until `kubectl audit` shows what we want: the apiserver flushes its log and we batch writes.
expect() {
  local pattern=$1
  for _ in $(seq 60); do
    ship
    if kubectl audit databases.example.com orders -n default 2>/dev/null | grep -Eq "$pattern"; then return 0; fi
    sleep 1
  done
  kubectl audit databases.example.com orders -n default || true
  fail "kubectl audit never showed /$pattern/"
}

export PATH="$ROOT/.venv/bin:$PATH"  # kubectl finds the plugin as kubectl-audit on PATH

echo "e2e: create, patch, status"
kubectl apply -f - <<'YAML'
apiVersion: example.com/v1
kind: Database
metadata: {name: orders, namespace: default}
spec: {replicas: 1, version: "16"}
YAML
expect "create +created"
kubectl patch database orders --type merge -p '{"spec":{"replicas":3}}'
expect "patch +spec.replicas: 1 -> 3"

echo "e2e: the ConfigMap"
CM=$(kubectl get database orders -o jsonpath='{.metadata.annotations.audit\.kube-audit-forwarder\.io/configmap}')
[ "$CM" = audit-databases-orders ] || fail "annotation is '$CM'"
OWNER=$(kubectl get configmap "$CM" -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')
[ "$OWNER" = Database/orders ] || fail "ownerReference is '$OWNER'"
kubectl get configmap "$CM" -o jsonpath='{.data.entries\.json}' | "$PY" -c 'import json,sys; e=json.load(sys.stdin); assert len(e) >= 2, e'
# the tailer's own annotation patch is audited but must not show up (no feedback loop)
if kubectl audit databases.example.com orders -n default | grep -q "kube-audit-tailer"; then fail "own writes tracked"; fi
kubectl audit db orders -n default
kubectl audit db orders -n default -o json > /dev/null

echo "e2e: delete; the ConfigMap goes with the object"
kubectl delete database orders
for _ in $(seq 60); do
  kubectl get configmap "$CM" >/dev/null 2>&1 || break
  ship; sleep 1
done
kubectl get configmap "$CM" >/dev/null 2>&1 && fail "ConfigMap $CM was not garbage-collected"
echo "e2e: PASS"
