# The two commands of the README. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint format clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first: a plain 'pip install torch' (or one pulled in by a dependency) resolves a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/spermseg demo --out runs/demo

test: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# System packages some tests need (headless chromium renders the HTML report); needs root and apt-get, skipped
# otherwise. Tests never install anything themselves; without these packages they skip and say so.
system-deps:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		echo "system-deps: chromium present"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null && \
		echo "system-deps: chromium installed" || echo "system-deps: installing chromium failed; its test will skip"; \
	else \
		echo "system-deps: chromium missing and not installable here (needs root + apt-get); its test will skip"; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
