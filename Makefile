# The two set-up commands of the README: `make demo` and `make test`. .ci/run calls `make test`.
PY ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test test-slow test-gpu bench

install:
	@command -v espeak-ng >/dev/null && command -v flite >/dev/null && command -v ffmpeg >/dev/null || \
		($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq espeak-ng flite ffmpeg sox >/dev/null)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"

demo: install
	prunehead demo

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

# The CUDA suite (tests/test_device.py): key paths end to end on the GPU, compared with the CPU.
test-gpu: install
	$(PY) -m pytest -m cuda -rs

bench: install
	$(PY) bench/bench_hib.py
	$(PY) bench/bench_onnx.py
