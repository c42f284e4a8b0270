# The two commands a newcomer needs are `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench soak clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/wxsub demo

# Two pytest workers: most of the suite's time is spent waiting on brokers and subprocesses.
# --dist loadfile keeps a module's tests on one worker (tests/cluster/test_cluster.py: one
# secured cluster, not one per worker).
test: setup
	$(PY) -m pytest -q -ra -n 2 --dist loadfile

SRC := wxsub wxsub_sandbox wxsub_dev tests bench

lint: setup
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

soak: setup
	$(PY) -m pytest -q -ra -m soak

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .wxsub
