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
	$(BIN)/python -m bench.payout --runs 2

# Every property test with SOAK_FACTOR times its examples (tests/conftest.py): long, so not
# part of `make test`.
SOAK_FACTOR ?= 20
soak: $(STAMP)
	SOAK_FACTOR=$(SOAK_FACTOR) $(BIN)/pytest tests/test_properties_pure.py \
		tests/test_properties_ledger.py tests/test_bulk_store.py tests/test_payout_property.py \
		tests/test_payout_fast_paths.py tests/test_projections_property.py \
		tests/test_bankfiles_pain001.py tests/test_read_ahead.py \
		tests/test_contribution_reversal.py tests/test_interest_reversal.py \
		tests/test_payout_changed_since_draft.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .hypothesis
