# Two commands set everything up: `make run` serves, `make test` runs the suite.
# With no DATABASE_URL the project starts PostgreSQL from the pgserver package in var/pgdata.
# requirements.txt is the runtime lock, requirements-test.txt the runtime set plus the test tools (both
# generated with hashes from the .in files: edit those, then `make lock`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
# uvicorn waits this long for open connections on a stop: longer than DRAIN_SECONDS (default 60).
GRACE ?= 75
PIP_INSTALL := $(BIN)/python -m pip install --quiet --require-hashes
# `make lock` compiles the locks with uv from a throwaway venv outside the project.
UV_VENV ?= /tmp/parley-uv
UV_VERSION := 0.13.9
UV_COMPILE := $(UV_VENV)/bin/uv pip compile --python-version 3.11 --python-platform linux --generate-hashes

.PHONY: install install-test run stop test lint migrate lock clean

# Runtime set only (make run, install). The stamps depend on the locks: editing a lock reinstalls.
$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) -r requirements.txt
	touch $@

# The test tools on top (make test, lint); `make run` afterwards installs nothing.
$(BIN)/.installed-test: requirements-test.txt $(BIN)/.installed
	$(PIP_INSTALL) -r requirements-test.txt
	touch $@

install: $(BIN)/.installed

install-test: $(BIN)/.installed-test

migrate: install
	$(BIN)/python manage.py migrate --noinput

run: migrate
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py ensure_demo_tenant --port $(PORT)
	$(BIN)/uvicorn config.asgi:application --host $(HOST) --port $(PORT) --proxy-headers --loop uvloop --http httptools \
		--ws-per-message-deflate false --timeout-graceful-shutdown $(GRACE)

# Stops what `make run` started: its server (this checkout's, on PORT) and the embedded PostgreSQL, if any.
stop:
	-pkill -TERM -f "$(BIN)/uvicorn config.asgi:application --host $(HOST) --port $(PORT)"
	test ! -x $(BIN)/python || $(BIN)/python -m config.embedded stop $${PARLEY_VAR_DIR:-var}/pgdata

test: install-test
	$(BIN)/ruff check .
	$(BIN)/python manage.py makemigrations --check --dry-run --verbosity 1
	$(BIN)/pytest

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lock:
	test -x $(UV_VENV)/bin/uv || { $(PYTHON) -m venv $(UV_VENV) && $(UV_VENV)/bin/pip install --quiet uv==$(UV_VERSION); }
	$(UV_COMPILE) requirements.in -o requirements.txt
	$(UV_COMPILE) requirements-test.in -o requirements-test.txt

clean:
	rm -rf $(VENV) var/static
