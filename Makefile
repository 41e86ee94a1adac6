# densevlm-mm: `make demo` (main job on the embedded default) and `make test`. Both install first.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= work_dirs/tiny_demo

.PHONY: install demo test mutation clean-demo

install:
	@bash tools/install.sh

demo: install
	$(PY) tools/run_tiny_demo.py --work-dir $(DEMO_DIR)

test: install
	$(PY) -m pytest -q --durations=15 tests

mutation: install
	$(PY) tools/mutation.py

clean-demo:
	rm -rf $(DEMO_DIR)
