# joulebench's one image, in two flavours:
#   runtime (default): the monitor and Locust master/workers, with the Azure traces baked in;
#   cpu:               the same plus vLLM's CPU build, for the compose stack's `cpu` profile.
# Multi-stage: the build stages hold pip and caches; the final stages copy only the virtualenv.
# Non-root (uid 10001), no secrets: everything a service needs comes from compose's environment.
#
# Optional inputs from the build context (both git-ignored; `make wheels`, `make traces`):
#   wheels/  a wheelhouse pip looks in first: the cpu image's torch (a CPU build, which PyPI does not
#            carry) comes from there; with the build argument PIP_NO_INDEX=1 every package does;
#   traces/  the Azure trace files, baked in instead of downloaded at build time.
# PYTHON_IMAGE: any Debian bookworm image with Python 3.11 as `python` and its headers, as the official
# image has them (CI builds on one of its own: tests/compose/ci.yml).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG PIP_NO_INDEX=0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_FIND_LINKS=/wheels
COPY wheel[s] /wheels/
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY joulebench joulebench
COPY monitor monitor
COPY server server
COPY loadgen loadgen
COPY compare compare
COPY estimands estimands
COPY predict predict
RUN /opt/venv/bin/pip install .

FROM build AS build-cpu
# PyPI's torchvision/torchaudio/torchcodec fail beside torch's CPU build and text models need none of
# them (see the Makefile).
RUN /opt/venv/bin/pip install '.[cpu]' \
 && /opt/venv/bin/pip uninstall -y torchvision torchaudio torchcodec

FROM ${PYTHON_IMAGE} AS base
# /data and /models belong to the user, so the named volumes mounted there do too (a new volume takes
# its mount point's owner).
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin joulebench \
 && mkdir /data /models && chown joulebench:joulebench /data /models
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER joulebench
WORKDIR /home/joulebench

FROM base AS cpu
USER root
# vLLM's CPU kernels (vllm/_C) link libnuma, and torch.compile (vLLM's default) builds its kernels with g++.
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libnuma1 g++ \
 && rm -rf /var/lib/apt/lists/*
USER joulebench
COPY --from=build-cpu /opt/venv /opt/venv
ENTRYPOINT ["joulebench"]

FROM base AS runtime
COPY --from=build /opt/venv /opt/venv
# The traces go into joulebench's cache at build time: from traces/ when the context has them, else a
# download (--trace-dir takes a local copy instead).
COPY --chown=joulebench:joulebench trace[s] /home/joulebench/.cache/joulebench/traces/
RUN python -c "from loadgen.traces import resolve_trace; resolve_trace('azure-conv'); resolve_trace('azure-code')"
ENTRYPOINT ["joulebench"]
