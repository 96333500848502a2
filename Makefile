# Two entry points, each sets up (or refreshes) the local virtualenv first:
#   make demo   -- the main job
#   make test   -- the test suite (what .ci/run calls)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup browser demo test lint bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The local CPU build first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# tests/test_report.py renders the report in Debian's Chromium; installed where this can
# (root with apt-get), else that test skips and says why.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } || \
	  echo "make: could not apt-get install chromium; tests/test_report.py will skip"; \
	else echo "make: no /usr/bin/chromium (needs root and apt-get); tests/test_report.py will skip"; fi

demo: setup
	$(VENV)/bin/wm-envs demo

test: setup browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

bench: setup  # the CPU benchmarks (wm_envs.cli.BENCHMARKS); each writes benchmarks/results/<name>.json and .md
	$(VENV)/bin/wm-envs bench
