# One image, three programs: audit-forwarder (the apiserver sidecar), audit-tailer (in the cluster),
# kubectl-audit; plus `python -m kube_audit.writer`, the apiserver-like log writer of docker-compose.yml.
#   docker build -t kube-audit-forwarder:0.1.0 .
#   docker run --rm kube-audit-forwarder:0.1.0 audit-forwarder --help
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Which programs the image holds (extras of pyproject.toml). The default holds all three; the apiserver
# sidecar image needs only the forwarder: docker build --build-arg EXTRAS=forwarder -t ...-forwarder .
ARG EXTRAS=forwarder,tailer,postgres,plugin

# --- build: wheels for the project and its dependencies, installed into a venv without pip ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fluent_forward/ fluent_forward/
COPY kube_audit/ kube_audit/
COPY forwarder/ forwarder/
COPY tailer/ tailer/
COPY kubectl_audit/ kubectl_audit/
# Every dependency ships binary wheels for amd64 and arm64; a platform without them would need
# build-essential here, never in the final stage.
# The daemons use the kubernetes client's asyncio flavour (kubernetes/aio, kube_audit/kube/aio.py), so it
# stays; the blocking copy loads kubeconfigs for kubectl audit (kube_audit/kube/blocking.py) and the
# package's __init__ imports it anyway (tests/unit/test_deploy.py checks who imports what).
ARG EXTRAS
RUN pip wheel --wheel-dir /wheels ".[${EXTRAS}]" \
 && python -m venv --without-pip /opt/kaf \
 && pip --python /opt/kaf/bin/python install --no-index --find-links /wheels "kube-audit-forwarder[${EXTRAS}]"

# --- final: the slim base, the venv, an unprivileged user; no compilers, no pip cache, no wheels ---
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kube-audit-forwarder" \
      org.opencontainers.image.description="Kubernetes apiserver audit events from a managed control plane into the cluster" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/kaf /opt/kaf
# 65532: the conventional "nonroot" uid. The folders a named volume is first mounted on keep this owner:
# the audit log, the forwarder's checkpoint, the tailer's store (SQLite by default).
RUN mkdir -p /var/log/audit /var/lib/audit-forwarder /var/lib/audit-tailer \
 && chown 65532:65532 /var/log/audit /var/lib/audit-forwarder /var/lib/audit-tailer
ENV PATH=/opt/kaf/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
WORKDIR /var/lib/audit-forwarder
# 24224 forward protocol (tailer), 8080 tailer HTTP API and metrics, 9880 forwarder metrics
EXPOSE 24224 8080 9880
CMD ["audit-tailer"]
