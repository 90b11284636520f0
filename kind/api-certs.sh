#!/usr/bin/env bash
# A self-signed CA and the audit API's serving certificate, made at install time (no committed keys):
#   kind/api-certs.sh OUTDIR [NAMESPACE]  ->  OUTDIR/ca.crt, OUTDIR/tls.crt, OUTDIR/tls.key
# The certificate names the Service kube-audit-api in NAMESPACE (default kube-audit), the name the
# kube-aggregator dials; the APIService's caBundle is ca.crt. Needs openssl. Used by kind/api-install.sh.
set -euo pipefail
OUT=${1:?usage: api-certs.sh OUTDIR [NAMESPACE]}
NS=${2:-kube-audit}
SVC=kube-audit-api
DAYS=${DAYS:-365}
mkdir -p "$OUT"
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days "$DAYS" -subj "/CN=kube-audit-api-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$OUT/ca.key" -out "$OUT/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$SVC.$NS.svc" -keyout "$OUT/tls.key" -out "$OUT/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.%s,DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
  "$SVC" "$SVC" "$NS" "$SVC" "$NS" "$SVC" "$NS" > "$OUT/tls.ext"
openssl x509 -req -in "$OUT/tls.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" -CAcreateserial -days "$DAYS" \
  -extfile "$OUT/tls.ext" -out "$OUT/tls.crt" 2>/dev/null
rm -f "$OUT/tls.csr" "$OUT/tls.ext" "$OUT/ca.srl" "$OUT/ca.key"  # the CA key is not needed again: re-run to rotate
