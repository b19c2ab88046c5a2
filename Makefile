# The two commands of the README: `make run` (the main job against the embedded emulator)
# and `make test` (the test suite). Both build the venv first if needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-reliability bench lint docs clean

run: $(VENV)/.installed
	$(BIN)/python scripts/demo.py

test: $(VENV)/.installed lint docs
	$(BIN)/python -m pytest -q

# ruff and mypy (issue 11); both run, and either failing fails the target; `make test` (and so CI) runs it first
lint: $(VENV)/.installed
	@status=0; \
	$(BIN)/ruff check daemon tests bench scripts || status=1; \
	$(BIN)/mypy || status=1; \
	exit $$status

# the documentation site (docs/, mkdocs.yml) into site/; --strict: a link to a missing page or
# anchor fails it. Needs no network (no theme fonts, nothing fetched). `make test` runs it.
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

$(VENV)/.docs-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[docs]'
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .cache demo site
