#!/bin/sh
# docker-compose.yml's init service: a throwaway CA, the proxy's server certificate and the forwarder's
# client certificate, written to $CERTS (a volume) at first start; nothing secret is committed.
# Also hands the shared audit-log volume to the image's unprivileged user.
set -eu
CERTS=${CERTS:-/certs}
OWNER=${OWNER:-65532:65532}
DAYS=${DAYS:-30}
mkdir -p "$CERTS"
cd "$CERTS"
if [ ! -s ca.crt ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$DAYS" \
    -subj "/CN=kube-audit-forwarder compose CA" -keyout ca.key -out ca.crt 2>/dev/null
  # name, subjectAltName, extendedKeyUsage
  issue() {
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
      -keyout "$1.key" -out "$1.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$2" "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$DAYS" \
      -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
  }
  issue proxy "DNS:proxy,DNS:localhost,IP:127.0.0.1" serverAuth
  issue forwarder "DNS:forwarder" clientAuth
  rm -f ca.key ca.srl  # nothing else is ever signed
  echo "init: certificates in $CERTS"
fi
chmod 0644 ./*.crt
chmod 0600 ./*.key
chown "$OWNER" ./*.crt ./*.key
for dir in "$@"; do chown "$OWNER" "$dir"; done
