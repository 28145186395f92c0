# syntax=docker/dockerfile:1
# remediator daemon image.  Build: docker build -t remediator:0.1.0 .
# The base is pinned to a patch release; pin it by digest too (python:3.11.14-slim-bookworm@sha256:...)
# in your registry mirror.  Checked by hadolint (`make lint`, tests/test_deploy.py).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY remediator ./remediator
RUN pip install --no-cache-dir --prefix=/install .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    REMEDIATOR_PLAYBOOKS=/etc/remediator/playbooks \
    REMEDIATOR_DATA_DIR=/var/lib/remediator
# tini runs as PID 1 and hands signals on to the daemon: the kernel drops a signal sent to a
# PID 1 that has no handler for it, and the interpreter's first moments have none; tini also
# reaps orphaned processes.  (The daemon installs its handlers before anything else: see cli.py.)
# Not pinned to a version: Debian's is a rebuild number per architecture (0.19.0-1+b3 on amd64
# today) that a pin would turn into a failed build on another architecture or after a rebuild;
# bookworm's tini is 0.19.0 on every architecture, and the base image is pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
# A fixed non-root uid/gid (the Kubernetes manifests run as 10001 with runAsNonRoot).
RUN groupadd --system --gid 10001 remediator \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin remediator \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/remediator
COPY --from=build /install /usr/local
COPY playbooks /etc/remediator/playbooks
USER 10001:10001
EXPOSE 8080
# Liveness only: readiness (/readyz: store and guardrail state reachable) is the orchestrator's
# business.  The slim image has no curl; Python's urllib does the probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["tini", "--", "remediator"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
