# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install the
# project first. Without an NVIDIA GPU the CPU build of torch is installed before the project, so
# pip does not pull a multi-GB CUDA build; GPU machines get whatever torch pip resolves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		echo "no NVIDIA GPU: installing the CPU build torch==2.13.0"; \
		$(PY) -m pip install -q torch==2.13.0; \
	fi
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flowblend demo

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) outputs
