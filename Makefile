# Greenlight: `make run` sets up and starts on the embedded defaults; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m bot db upgrade
	$(PY) -m bot profiles import examples/profiles.csv --audience newsletter
	$(PY) -m bot deliveries import examples/deliveries.yml
	$(PY) -m bot deliveries prepare spring-sale
	$(PY) -m bot deliveries list
	@echo
	@echo "Greenlight is set up on SQLite (data/greenlight.db) with the examples loaded."
	@echo "Next: python -m bot deliveries show spring-sale   (state, counts and KPIs)"
	@echo "      python -m bot roles grant <your Slack user id> start-deliveries"
	@echo "The Slack app, the sender and the HTTP endpoints start here once they are built;"
	@echo "README.md says what each command does today."

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/import_profiles.py
	$(PY) benchmarks/prepare.py

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache .hypothesis
