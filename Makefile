# The README's commands. Each target sets up what it needs: the virtualenv, the emulators.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv demo test unit integration lint stack-up stack-down stack-status bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[local,dev]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

stack-up: venv
	$(BIN)/python -m infra.local up

stack-down:
	@test -x $(BIN)/python && $(BIN)/python -m infra.local down || true

stack-status: venv
	$(BIN)/python -m infra.local status

demo: venv
	$(BIN)/python -m bench.flash_sale demo

bench: venv
	$(BIN)/python -m bench.flash_sale bench

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy flashsale tasks outbox saga infra bench payments notifications intake

unit: venv
	$(BIN)/pytest -m "not integration" -q

integration: venv
	$(BIN)/pytest -m integration -q

test: venv lint
	$(BIN)/pytest -q -m "not slow"

# Every failure scenario, the slow ones too, and one table of their exact counts at the end
# (also written to bench/results/scenarios.json).
.PHONY: scenarios
scenarios: venv
	FLASHSALE_SCENARIOS_JSON=bench/results/scenarios.json $(BIN)/pytest -q -m scenario tests/integration

clean: stack-down
	rm -rf .stack
