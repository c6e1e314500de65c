# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install the
# project first. Without an NVIDIA GPU the CPU build of torch is installed before the project, so
# pip does not pull a multi-GB CUDA build; GPU machines get whatever torch pip resolves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean postgres

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

test: $(STAMP) postgres
	$(PY) -m mypy adaptive
	$(PY) -m pytest -n auto --dist worksteal

# The scale-out test runs workers against a real PostgreSQL (a throwaway cluster the test starts on
# loopback). Install Debian's server package when it is missing and we may; otherwise that test is
# skipped and says so loudly.
postgres:
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing PostgreSQL for the scale-out test"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
				|| echo "WARNING: could not install PostgreSQL; its test will be skipped"; \
		else echo "WARNING: PostgreSQL is not installed and cannot be installed here; its test will be skipped"; fi; \
	fi

clean:
	rm -rf $(VENV) outputs
