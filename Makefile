# lamina: the two commands users run are `make test` and `make bench`; both set up first.
PY := .venv/bin/python
PYTEST_ARGS ?=
# A fixed base temp dir, emptied with rm -rf first: tests make trees thousands of levels deep,
# which pytest's own (recursive) clean-up of old temp dirs cannot remove.
TEST_TMP ?= /tmp/lamina-tests

.PHONY: setup setup-bench test test-fast test-powercut test-crash-long test-fuzz-long bench bench-quick bench-gate bench-instrument clean

setup:
	@bash scripts/setup.sh

setup-bench:
	@bash scripts/setup.sh --bench

test: setup
	rm -rf $(TEST_TMP)
	$(PY) -m pytest --basetemp=$(TEST_TMP) $(PYTEST_ARGS)

test-fast: setup
	rm -rf $(TEST_TMP)
	$(PY) -m pytest --basetemp=$(TEST_TMP) -m "not slow" $(PYTEST_ARGS)

# The long power-cut profile (issue 19): 250 cuts on each of vfs and overlay (about 25 minutes);
# `make test` runs 24 each. POWERCUT_SEED=N replays a sequence.
POWERCUT_CUTS ?= 250
test-powercut: setup
	rm -rf $(TEST_TMP)
	POWERCUT_CUTS=$(POWERCUT_CUTS) $(PY) -m pytest --basetemp=$(TEST_TMP) -s tests/powercut $(PYTEST_ARGS)

# The differential driver fuzzer's long profile (tests/drivers/test_differential.py): thousands of
# random layer stacks on every driver, each also unpacked by umoci; `make test` runs a bounded one.
# FUZZ_EXAMPLES=N sets the number of stacks.
FUZZ_EXAMPLES ?= 3000
test-fuzz-long: setup
	rm -rf $(TEST_TMP)
	LAMINA_FUZZ=long LAMINA_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest --basetemp=$(TEST_TMP) \
		--hypothesis-show-statistics tests/drivers/test_differential.py $(PYTEST_ARGS)

# The long profile of the random-kill trials on btrfs (make test runs 3 per operation).
test-crash-long: setup
	rm -rf $(TEST_TMP)
	LAMINA_GC_BTRFS_TRIALS=$${LAMINA_GC_BTRFS_TRIALS:-40} $(PY) -m pytest --basetemp=$(TEST_TMP) tests/graph/test_gc_btrfs.py $(PYTEST_ARGS)

bench: setup-bench
	$(PY) -m bench run --profile default

bench-quick: setup-bench
	$(PY) -m bench run --profile quick

# CI's gate: A/B of this checkout against HEAD^ on the quick workloads (budget 15 min on 2 cores)
bench-gate: setup-bench
	$(PY) -m bench gate

# the instrument's own figures in bench/README.md (about 35 min; needs a clean checkout)
bench-instrument: setup-bench
	$(PY) -m bench.instrument --concurrency ""

clean:
	rm -rf .venv .pytest_cache .benchmarks build *.egg-info
