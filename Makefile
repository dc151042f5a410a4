# certbot-dane: `make test` runs the whole suite (lab included), `make demo`
# runs one renewal on the local lab and prints its timeline.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all venv lab-packages lint test unit demo docs clean

all: test

$(STAMP): setup.py requirements/test.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/test.txt -e .
	touch $(STAMP)

venv: $(STAMP)

lab-packages:
	bash scripts/install-lab-packages.sh

lint: venv
	$(BIN)/ruff check certbot_dane tests scripts $(wildcard bench)

unit: venv
	$(BIN)/pytest -q -m "not lab"

test: venv lab-packages lint
	$(BIN)/pytest -q

demo: venv lab-packages
	$(BIN)/python scripts/demo.py

docs: venv
	$(BIN)/pip install --quiet "sphinx>=5"
	$(BIN)/sphinx-build -q -W -b html docs docs/_build/html

clean:
	rm -rf $(VENV) build dist *.egg-info docs/_build .pytest_cache
