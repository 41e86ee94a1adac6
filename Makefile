# densevlm-mm: `make demo` (main job on the embedded default) and `make test`. Both install first.
# `make docs` builds the documentation site (docs/en, Sphinx + MyST) with warnings as errors.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= work_dirs/tiny_demo
DOCS_OUT ?= docs/en/_build/html

.PHONY: install demo test mutation docs clean-demo

install:
	@bash tools/install.sh

demo: install
	$(PY) tools/run_tiny_demo.py --work-dir $(DEMO_DIR)

test: install
	$(PY) -m pytest -q --durations=15 tests

mutation: install
	$(PY) tools/mutation.py

docs: install
	$(PY) -m pip install -q -r requirements/docs.txt
	$(PY) -m sphinx -E -W --keep-going -b html docs/en $(DOCS_OUT)

clean-demo:
	rm -rf $(DEMO_DIR)
