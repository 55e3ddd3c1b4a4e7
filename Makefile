# One-step set-up: `make demo` and `make test` create the virtual environment when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages the project uses when present: ccache (fast Verilator rebuilds),
# liblz4-dev (FST waveforms), iverilog (second simulator).
DEB_PACKAGES := ccache liblz4-dev iverilog

.PHONY: setup test demo lint clean debs

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory debs
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,fpga]"
	touch $(STAMP)

debs:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing"; \
	    ($$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing (the project still works, more slowly)"; \
	  else echo "warning: missing Debian packages:$$missing (install them for faster builds)"; fi; \
	fi

# One test worker per core (pytest-xdist): most of the time goes to compiling Verilator models,
# which runs on one core each; `worksteal` keeps both busy to the end.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal

demo: $(STAMP)
	$(BIN)/npu demo

lint: $(STAMP)
	$(BIN)/ruff check golden rtl sim sw tests

clean:
	rm -rf $(VENV) build .pytest_cache .npu_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
