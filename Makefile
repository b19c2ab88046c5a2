# The two commands of the README: `make run` (the main job against the embedded emulator)
# and `make test` (the test suite). Both build the venv first if needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-lowest test-reliability bench lint docs clean

run: $(VENV)/.installed
	$(BIN)/python scripts/demo.py

# four test processes, each taking whole modules (their module-scoped emulators and fixtures
# stay in one process): most tests wait on real daemons and servers, not on the CPU
test: $(VENV)/.installed lint docs
	$(BIN)/python -m pytest -q -n 4 --dist loadfile

# ruff, mypy, the import contracts and the structure check; all run, and either failing fails the target; `make test` (and so CI) runs it first
lint: $(VENV)/.installed
	@status=0; \
	$(BIN)/ruff check daemon tests bench scripts || status=1; \
	$(BIN)/mypy || status=1; \
	$(BIN)/lint-imports --no-cache >/dev/null || $(BIN)/lint-imports --no-cache || status=1; \
	$(BIN)/python scripts/check_structure.py || status=1; \
	exit $$status

# the documentation site (docs/, mkdocs.yml) into site/; --strict: a link to a missing page or
# anchor fails it. Needs no network (no theme fonts, nothing fetched). `make test` runs it.
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

$(VENV)/.docs-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[docs]'
	touch $@

# The lowest versions pyproject.toml allows (uv's lowest-direct resolution: each direct dependency
# at its floor), in a venv of their own built from nothing: the unit tests, a one-file upload from
# a terminal and a daemon that uploads and serves /metrics, against the emulator. CI runs it after `make test`.
LOWEST := .cache/venv-lowest
test-lowest:
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/pip install -q 'uv>=0.5'
	$(LOWEST)/bin/uv pip install -q --python $(LOWEST)/bin/python --resolution lowest-direct -e '.[test]'
	$(LOWEST)/bin/python -m pytest -q -p no:cacheprovider tests/unit tests/test_smoke.py \
		tests/test_operations.py::test_daemon_notifies_serves_metrics_and_health

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .cache demo site
