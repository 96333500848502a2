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

bench: setup  # the CPU benchmarks (wm_envs.cli.BENCHMARKS); each writes benchmarks/results/<name>.json and .md
	$(VENV)/bin/wm-envs bench
