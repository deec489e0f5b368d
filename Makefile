# `make demo` and `make test` do all set-up on a fresh machine; `make test` lints (ruff, mypy) first.
PY ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test lint install clean coverage

$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/glcnet demo --out demo_out

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile tests

# line and branch coverage of the suite (every process: xdist workers and CLI subprocesses), docs/testing.md
TESTS ?= tests
coverage: $(STAMP)
	rm -f .coverage .coverage.*
	COVERAGE_PROCESS_START=$(CURDIR)/pyproject.toml $(VENV)/bin/python -m pytest -q -n 2 --dist loadfile $(TESTS)
	$(VENV)/bin/coverage combine -q
	$(VENV)/bin/coverage report --precision=2 | grep -E "^(Name|TOTAL)"

clean:
	rm -rf $(VENV) demo_out
