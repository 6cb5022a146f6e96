# Set-up is part of every target: a fresh machine needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo detect-demo test clean

demo: $(VENV)/.installed
	$(BIN)/botnet train --output-dir runs/demo-$$(date +%Y%m%d-%H%M%S)

detect-demo: $(VENV)/.installed
	$(BIN)/botnet detect train --output-dir runs/detect-demo-$$(date +%Y%m%d-%H%M%S)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n auto --dist loadfile

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
