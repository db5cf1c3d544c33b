# The two commands of the README. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORE_STAMP := $(VENV)/.installed-core
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint format clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first: a plain 'pip install torch' (or one pulled in by a dependency) resolves a multi-GB CUDA build.
# The demo needs the core package only; the test suite adds the dev extra (napari, Qt, ONNX, ...: about 55 s
# more on a 2-core machine, measured), so 'make demo' on a fresh machine does not wait for it.
$(CORE_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $(CORE_STAMP)

$(STAMP): $(CORE_STAMP)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(CORE_STAMP)
	$(BIN)/spermseg demo --out runs/demo

test: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# System packages some tests need; needs root and apt-get, skipped otherwise. Tests never install anything
# themselves; without these packages they skip and say so.
# - chromium: headless chromium renders the HTML report;
# - Qt + OpenGL for the napari plugin's tests (tests/napari): napari draws its canvas with OpenGL, which Qt 6's
#   offscreen platform lacks, so the tests run hidden viewers on a private Xvfb (Qt's xcb platform) with Mesa's
#   software GL; the xcb libraries are what PyQt6's xcb platform plugin links against.
QT_SYSTEM_DEPS := xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libdbus-1-3 libfontconfig1 libxkbcommon0 \
	libxkbcommon-x11-0 libx11-xcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
	libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0

system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="chromium"; \
	dpkg -s $(QT_SYSTEM_DEPS) >/dev/null 2>&1 || missing="$$missing $(QT_SYSTEM_DEPS)"; \
	if [ -z "$$missing" ]; then \
		echo "system-deps: chromium and the Qt/Xvfb libraries present"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null && \
		echo "system-deps: installed$$missing" || echo "system-deps: installing$$missing failed; their tests will skip"; \
	else \
		echo "system-deps: missing$$missing, not installable here (needs root + apt-get); their tests will skip"; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
