# The two set-up commands of the README: `make demo` and `make test`. .ci/run calls `make test`.
# `make results` (hours) and `make results-smoke` (minutes) rebuild docs/results.md's tables; not part of `make test`.
#
# Everything Python goes into a project virtualenv, .venv/ (git-ignored), made from $(PY): works with any
# Python 3.10+, Debian's externally-managed one included. Root (or sudo) is needed only for apt, and only
# when a system tool is missing. torch is the CPU wheel from PyTorch's CPU index; where that index cannot
# be reached (an offline mirror of PyPI only), pip's configured index is used instead.
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
TORCH ?= 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
APT_PACKAGES := espeak-ng flite ffmpeg sox
TOOLS := espeak-ng flite ffmpeg sox
DEMO_ARGS ?=
PIP := $(VPY) -m pip install --quiet --disable-pip-version-check

.PHONY: install system venv demo test test-slow test-gpu bench results results-smoke clean-venv

install: system $(VENV)/.installed

# System tools (apt): only when one is missing; as root, else with sudo, else print the command to run.
system:
	@missing=""; for t in $(TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	venv_ok=1; $(PY) -c "import ensurepip, venv" >/dev/null 2>&1 || [ -x $(VPY) ] || venv_ok=0; \
	pkgs="$(APT_PACKAGES)"; [ $$venv_ok = 1 ] || pkgs="$$pkgs python3-venv"; \
	if [ -z "$$missing" ] && [ $$venv_ok = 1 ]; then exit 0; fi; \
	echo "missing:$$missing$$( [ $$venv_ok = 1 ] || echo ' python3-venv (ensurepip)')"; \
	if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$pkgs >/dev/null; \
	elif command -v sudo >/dev/null 2>&1; then echo "installing with sudo (apt needs root):"; \
		sudo apt-get update -qq && sudo apt-get install -y -qq $$pkgs >/dev/null; \
	else echo "apt needs root and there is no sudo; as root run:  apt-get install -y $$pkgs  then make again"; \
		exit 1; fi

$(VPY): | system
	$(PY) -m venv $(VENV)

# The CPU torch wheel first (PyTorch's CPU index; pip's configured index if that fails), then the package.
$(VENV)/.installed: pyproject.toml | $(VPY)
	@$(VPY) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH)')" 2>/dev/null || \
		$(PIP) --retries 1 --timeout 20 "torch==$(TORCH)" --index-url $(TORCH_INDEX) 2>/dev/null || \
		(echo "no torch==$(TORCH) from $(TORCH_INDEX): trying pip's configured index"; \
		 $(PIP) "torch==$(TORCH)")
	$(PIP) -e ".[test]"
	@touch $@

venv: $(VENV)/.installed

# A fresh run each time: `prunehead demo` replaces its own earlier prunehead-demo/ (DEMO_ARGS: more options).
demo: install
	$(VENV)/bin/prunehead demo $(DEMO_ARGS)

test: install
	$(VPY) -m pytest

test-slow: install
	$(VPY) -m pytest -m slow

# The CUDA suite (tests/test_device.py): key paths end to end on the GPU, compared with the CPU.
test-gpu: install
	$(VPY) -m pytest -m cuda -rs

bench: install
	$(VPY) bench/bench_hib.py
	$(VPY) bench/bench_onnx.py

# `make results`: trains the benchmark models from recipes/, measures every table of docs/results.md into
# runs/results/<model>/<step>.json and regenerates the tables from that JSON, printing each figure beside its
# documented value. Resumable: run it again after an interruption; finished steps are skipped. Hours on 2 CPU
# cores, so not part of `make test`. RESULTS_ARGS narrows it, e.g. RESULTS_ARGS="--models w2v2-12x12-ks".
RESULTS_ARGS ?=
results: install
	@start=$$(date +%s); \
	$(VPY) -m bench.results run $(RESULTS_ARGS) && $(VPY) -m bench.results render; status=$$?; \
	echo "make results: wall time $$(( $$(date +%s) - start )) s"; exit $$status

# The same steps on tiny models and a 180-clip FSDD subset, into runs/results-smoke/ (13 min); the tables go
# to runs/results-smoke/results.md, docs/results.md is not touched.
results-smoke: install
	@start=$$(date +%s); \
	$(VPY) -m bench.results run --smoke $(RESULTS_ARGS) && \
	$(VPY) -m bench.results render --smoke --quiet --out runs/results-smoke/results.md; status=$$?; \
	echo "make results-smoke: wall time $$(( $$(date +%s) - start )) s"; exit $$status

clean-venv:
	rm -rf $(VENV)
