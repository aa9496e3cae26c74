# Both targets create or reuse .venv/ and install everything on a fresh machine.
PY := .venv/bin/python

.PHONY: env demo test
env:
	bash tools/install_env.sh

demo: env
	$(PY) tools/demo.py

test: env
	HGKD_REQUIRE_SPCONV=1 $(PY) -m pytest -q tests
