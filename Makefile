# Two entry points, each sets up (or refreshes) the local virtualenv first:
#   make demo   -- the main job
#   make test   -- the test suite (what .ci/run calls)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup demo test lint bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The local CPU build first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/wm-envs demo

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

bench: setup  # every benchmark; each writes benchmarks/results/<name>.json and .md
	for name in throughput experts sim2sim collect_throughput wm_throughput genie_throughput; do \
		$(PY) -m benchmarks.$$name || exit 1; done
