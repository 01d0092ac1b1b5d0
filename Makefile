# lamina: the two commands users run are `make test` and `make bench`; both set up first.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-fast bench bench-quick clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench run --profile default

bench-quick: setup
	$(PY) -m bench run --profile quick

clean:
	rm -rf .venv .pytest_cache .benchmarks build *.egg-info
