# Both targets create or reuse .venv/ and install everything on a fresh machine.
# HGKD_VENV: another venv for tools/install_env.sh and these targets (default .venv/)
PY := $(or $(HGKD_VENV),.venv)/bin/python

.PHONY: env demo test coverage
env:
	bash tools/install_env.sh

demo: env
	$(PY) tools/demo.py

test: env
	HGKD_REQUIRE_SPCONV=1 $(PY) -m pytest -q tests

# the test suite under coverage.py, tool subprocesses included (.coveragerc)
coverage: env
	HGKD_ROOT=$(CURDIR) HGKD_REQUIRE_SPCONV=1 $(PY) -m coverage run -m pytest -q tests
	$(PY) -m coverage combine -q
	$(PY) -m coverage report
