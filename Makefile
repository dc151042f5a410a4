# certbot-dane: `make test` runs the whole suite (lab included), `make demo`
# runs one renewal on the local lab and prints its timeline.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all venv lab-packages packaging-tools lint test unit tox demo docs clean

all: test

$(STAMP): setup.py requirements/test.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/test.txt -e .
	touch $(STAMP)

venv: $(STAMP)

lab-packages:
	bash scripts/install-lab-packages.sh

packaging-tools:
	bash scripts/install-packaging-tools.sh

lint: venv
	$(BIN)/ruff check certbot_dane tests scripts $(wildcard bench)

unit: venv
	$(BIN)/pytest -q -m "not lab and not packaging"

test: venv lab-packages packaging-tools lint
	$(BIN)/pytest -q

# The suite under certbot 5.8 and under certbot 2.1 (as Debian 12 ships it).
tox: venv lab-packages
	$(BIN)/pip install --quiet tox
	$(BIN)/tox

demo: venv lab-packages
	$(BIN)/python scripts/demo.py

docs: venv
	$(BIN)/pip install --quiet "sphinx>=5"
	$(BIN)/sphinx-build -q -W -b html docs docs/_build/html

clean:
	rm -rf $(VENV) build dist *.egg-info docs/_build .pytest_cache
