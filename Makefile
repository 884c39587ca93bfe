# fastban: `make demo` plays a live attack in a throwaway lab; `make test` runs the tests.
# Both first prepare the host (Debian packages, kernel headers, bpffs), the virtualenv and the
# Cython build; each step is idempotent.

VENV    := .venv
PY      := $(VENV)/bin/python
PYTEST  := $(PY) -m pytest

.PHONY: setup host venv build test demo bench bench-quick clean

setup: host build

host:
	bash bpf/host-setup.sh

# BCC is Debian's python3-bpfcc: a venv made from /usr/bin/python3 with system site-packages sees it.
$(VENV)/.deps: pyproject.toml
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "Cython>=3.0" setuptools wheel
	$(PY) -m pip install -q -e '.[test]' --no-build-isolation
	$(PY) -c "import bcc" || { echo "the virtualenv cannot import bcc (python3-bpfcc)"; exit 1; }
	touch $@

venv: $(VENV)/.deps

build: venv
	$(PY) setup.py -q build_ext --inplace

# The whole suite with the compiled parser, then every test that touches SIP parsing (marked
# `parses` by tests/conftest.py) on the pure-Python fallback. Each run ends with a line
# "fastban: N tests ran with the ... parser".
test: setup
	$(PYTEST) -q tests
	FASTBAN_PURE_PYTHON=1 $(PYTEST) -q -m parses tests

demo: setup
	$(PY) -m fastban.lab.demo

# The benchmark report (about 12 minutes): benchmarks/RESULTS.md, JSON and plots in
# benchmarks/results/. bench-quick runs a shorter version of each part.
bench: setup
	$(PY) -m pip install -q -e '.[bench]' --no-build-isolation
	$(PY) -m benchmarks.run

bench-quick: setup
	$(PY) -m pip install -q -e '.[bench]' --no-build-isolation
	$(PY) -m benchmarks.run --quick

clean:
	rm -rf build $(VENV) fastban/*.so ext/*.c .pytest_cache
