# Greenlight: `make run` sets up and starts on the embedded defaults; `make test` runs the
# linters, the import contracts, mypy and every test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run seed reset test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The examples, loaded again at every `make run` (imports of the same files change
# nothing); spring-sale is prepared while it can be, and once it was confirmed or sent
# `make run` says so and goes on. `make reset` starts the examples over.
seed: $(STAMP)
	$(PY) -m bot db upgrade
	$(PY) -m bot profiles import examples/profiles.csv --audience newsletter
	$(PY) -m bot deliveries import examples/deliveries.yml
	@if $(PY) -m bot deliveries show spring-sale --json | $(PY) -c 'import json, sys; sys.exit(json.load(sys.stdin)["state"] not in ("editing", "ready"))'; then \
	  $(PY) -m bot deliveries prepare spring-sale; \
	else \
	  echo "spring-sale was confirmed or sent already (make reset starts the examples over)"; \
	fi
	$(PY) -m bot deliveries list

reset:
	rm -rf data
	@echo "data/ removed (database, outbox, generated secret): the next make run starts afresh"

run: seed
	@echo
	@echo "Examples loaded. The command line is .venv/bin/python -m bot (or . .venv/bin/activate, then python -m bot);"
	@port=$$($(PY) -c 'from bot.config import get_settings as s; print(s().port)'); \
	if $(PY) -c 'import sys; from bot.config import get_settings; from bot.entrypoints.playground.setup import wanted; sys.exit(not wanted(get_settings()))'; then \
	  echo "Slack is not connected: try the whole flow in the local playground, http://localhost:$$port/playground"; \
	else \
	  echo "next: .venv/bin/python -m bot roles grant <your Slack member id> start-deliveries"; \
	fi; \
	echo "Health: http://localhost:$$port/healthz"
	@echo "Starting Greenlight (Ctrl-C stops it); messages go to MAIL_URL (default data/outbox)."
	$(PY) -m bot $$($(PY) -c 'from bot.config import get_settings as s; print("socket" if s().slack_app_token else "serve")')

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/import_profiles.py
	$(PY) benchmarks/prepare.py
	$(PY) benchmarks/build_message.py
	$(PY) benchmarks/send_throughput.py
	$(PY) benchmarks/ack_latency.py
	$(PY) benchmarks/feedback_ingest.py
	$(PY) benchmarks/digest.py

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache .hypothesis
