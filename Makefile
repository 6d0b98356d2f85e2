# One command sets up from nothing and runs the demo; one sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: setup demo test test-fast lint bento notebooks clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,scale]"
	touch $(STAMP)

demo: setup            ## generate -> ingest -> resolve -> features -> train -> score -> serve
	$(VENV)/bin/cdp demo

test: setup lint       ## lint, then the whole suite, including the end-to-end test with a real BentoML server
	$(PY) -m pytest -q

lint: setup            ## ruff lint + format check + mypy (configured in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@# mypy reads the installed layout: the stage folders are cdp.* only through setuptools' package-dir
	rm -rf build/typecheck
	$(PY) -m pip install --quiet --no-deps --no-compile --target build/typecheck . 2>/dev/null
	cd build/typecheck && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p cdp

test-fast: setup       ## skip the slow end-to-end tests
	$(PY) -m pytest -q -m "not slow"

bento: setup           ## the service as a bento (wheel of the package + locked requirements)
	$(PY) -m pip wheel --quiet --no-deps -w dist .
	UV_CONSTRAINT=$$PWD/constraints.txt $(VENV)/bin/bentoml build

notebooks: setup       ## re-run the notebooks on a small demo workspace (built once by the cdp commands), outputs saved in place
	@test -f data/notebooks-demo/.built || { for step in "generate --customers 1500" ingest resolve features \
	  "train churn" "train next-best-product" "train campaign-response" "train clv" score; do \
	  $(VENV)/bin/cdp $$step --home data/notebooks-demo || exit 1; done; touch data/notebooks-demo/.built; }
	CDP_HOME=$(CURDIR)/data/notebooks-demo $(VENV)/bin/jupyter-execute --inplace notebooks/0*.ipynb

clean:
	rm -rf data .pytest_cache
