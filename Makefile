# The two commands a newcomer needs are `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench soak clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/wxsub demo

test: setup
	$(PY) -m pytest -q -ra

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
