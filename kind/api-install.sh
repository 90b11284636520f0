#!/usr/bin/env bash
# Registers the tailer's audit API with the cluster's kube-apiserver (an aggregated API):
#   1. a self-signed CA and a serving certificate for kube-audit-api.kube-audit.svc (kind/api-certs.sh),
#      stored as the Secret kube-audit-api-tls that kind/tailer.yaml mounts
#   2. kind/tailer-api.yaml: Service, APIService, the delegated-auth RBAC and the viewer ClusterRole
#   3. the APIService's caBundle, so the kube-aggregator trusts that certificate
# Run after kind/tailer-rbac.yaml (the namespace) and before or after kind/tailer.yaml; re-run to rotate
# the certificate (the tailer reloads it). With cert-manager instead, see README "Register the audit API".
set -euo pipefail
cd "$(dirname "$0")/.."
NS=${NAMESPACE:-kube-audit}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
kind/api-certs.sh "$WORK" "$NS"
kubectl -n "$NS" create secret tls kube-audit-api-tls --cert "$WORK/tls.crt" --key "$WORK/tls.key" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f kind/tailer-api.yaml
CA_BUNDLE=$(base64 < "$WORK/ca.crt" | tr -d '\n')
kubectl patch apiservice v1alpha1.audit.kube-audit-forwarder.io --type merge \
  -p "{\"spec\":{\"caBundle\":\"$CA_BUNDLE\"}}"
echo "api-install: registered; check with: kubectl get apiservice v1alpha1.audit.kube-audit-forwarder.io"
