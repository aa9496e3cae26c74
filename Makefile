# Both targets create or reuse .venv/ and install everything on a fresh machine.
# HGKD_VENV: another venv for tools/install_env.sh and these targets (default .venv/)
PY := $(or $(HGKD_VENV),.venv)/bin/python

.PHONY: env demo test
env:
	bash tools/install_env.sh

demo: env
	$(PY) tools/demo.py

test: env
	HGKD_REQUIRE_SPCONV=1 $(PY) -m pytest -q tests
