# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install lint typecheck bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pension-ledger demo --db ./var/demo.db --fresh

test: $(STAMP)
	$(BIN)/ruff check ledger payout_engine consumers entrypoints tests
	$(BIN)/mypy ledger payout_engine consumers entrypoints
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check ledger tests bench

typecheck: $(STAMP)
	$(BIN)/mypy ledger

bench: $(STAMP)
	$(BIN)/python -m bench.contributions
	$(BIN)/python -m bench.projections

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .hypothesis
