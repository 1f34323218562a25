# Set-up and entry points. Both targets install act3d (with the torch pin from constraints.txt) first,
# so each works on a fresh clone.
PYTHON ?= python3
PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: install install-dev demo test bench

install:
	$(PIP) -e .

install-dev:
	$(PIP) -e ".[dev]"

demo: install
	$(PYTHON) -m act3d demo

test: install-dev
	$(PYTHON) -m pytest -q

bench: install-dev
	$(PIP) ".[bench]"
	$(PYTHON) benchmarks/ops.py
