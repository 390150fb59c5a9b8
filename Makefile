# The two commands a newcomer needs: `make run` and `make test`.
# Both create (or reuse) a virtualenv in .venv and install zcraq into it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run run-ha test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: start a local coordinator and the 3-node chain from config/ in the foreground (Ctrl-C stops)
run: $(STAMP)
	$(BIN)/zcraq run --config-dir config

## run-ha: the same with three coordinators on a local 3-member etcd, from config/ha/
run-ha: $(STAMP)
	$(BIN)/zcraq run --config-dir config/ha

## test: run the whole test suite
test: $(STAMP)
	$(BIN)/python -m pytest

## bench: measure throughput and latency of 1- and 3-node chains (see BENCHMARKS.md)
bench: $(STAMP)
	$(BIN)/python bench/chain_bench.py --nodes 3

clean:
	rm -rf $(VENV) var .pytest_cache
