# Helper image for docker-compose.yml: openssl (the init service) and the konnectivity stand-in
# (stunnel for mutual TLS in front of tinyproxy for HTTP CONNECT). Not part of the product image.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssl stunnel4 tinyproxy \
 && rm -rf /var/lib/apt/lists/*
COPY init-certs.sh /usr/local/bin/init-certs
COPY stunnel.conf /etc/stunnel/connect.conf
COPY tinyproxy.conf /etc/tinyproxy/connect.conf
USER 65532:65532
