# Two commands: `make demo` runs the kiosk on the bundled demo, `make test` runs the tests.
# Both create .venv and install the pinned dependencies (wheels only, no dlib source build).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHARDS ?= 2
# Matcher processes. 1 (plain `honcho start`) serves every shard of the index, one thread per
# shard; MATCHERS=2 runs one process per core (matcher.N serves the shards k % 2 == N-1);
# MATCHERS=0 runs none (the shards are served from other hosts: RELIABILITY.md).
MATCHERS ?= 1
HONCHO_MATCHERS := MEGAPIXELS_MATCHERS=$(or $(filter-out 0,$(MATCHERS)),1) $(BIN)/honcho start -c matcher=$(MATCHERS)
DEMO_INDEX := build/demo-index-$(SHARDS)shards

.PHONY: install demo test lint clean systemd kiosk kiosk-dlib

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; this is " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "setuptools==80.10.2"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(DEMO_INDEX)/manifest.json: $(STAMP) $(wildcard demo/gallery/*/*) index/lfw_calibration.json
	$(BIN)/megapixels index build demo/gallery --out $(DEMO_INDEX) --shards $(SHARDS)

# The demo index is per shard count, so `make demo SHARDS=4` builds a 4-shard one; one matcher
# serves all its shards, or `make demo SHARDS=4 MATCHERS=2` runs two matcher processes.
# Without a screen (no DISPLAY / WAYLAND_DISPLAY) the display runs headless and prints JSON lines.
demo: $(STAMP) $(DEMO_INDEX)/manifest.json
	@if [ -z "$$DISPLAY$$WAYLAND_DISPLAY" ]; then echo "no screen found: the display runs headless (results as JSON lines)"; fi
	PATH="$(abspath $(BIN)):$$PATH" PYTHONUNBUFFERED=1 \
	MEGAPIXELS_HEADLESS=$${MEGAPIXELS_HEADLESS:-$$( [ -z "$$DISPLAY$$WAYLAND_DISPLAY" ] && echo 1 || echo 0)} \
	MEGAPIXELS_INDEX=$${MEGAPIXELS_INDEX:-$(DEMO_INDEX)} \
	$(HONCHO_MATCHERS)

# The production start: webcam 0, fullscreen, config/kiosk.toml. First makes sure the venv runs
# dlib built against OpenBLAS (~5x faster descriptors): built once (~4.5 min on 2 cores) into
# ~/.cache/megapixels/wheels, checked against the prebuilt dlib on the bundled faces, installed.
# Without a compiler / cmake / OpenBLAS it says so and keeps the prebuilt dlib.
kiosk-dlib: $(STAMP)
	$(BIN)/python -m faces.fast_dlib

kiosk: kiosk-dlib
	@test -f "$${MEGAPIXELS_INDEX:-build/kiosk-index}/manifest.json" || { echo "no index at $${MEGAPIXELS_INDEX:-build/kiosk-index}: build one with 'megapixels index build <dataset> --out build/kiosk-index'"; exit 2; }
	PATH="$(abspath $(BIN)):$$PATH" PYTHONUNBUFFERED=1 MEGAPIXELS_CONFIG=config/kiosk.toml OPENBLAS_NUM_THREADS=1 \
	$(HONCHO_MATCHERS)

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

# Production supervision: systemd units (restart on failure) for the kiosk config, one per actor
# and one per matcher process (MATCHERS=2: megapixels-matcher-1 and -2, MEGAPIXELS_MATCHERS=2).
# Install with: sudo cp build/systemd/* /etc/systemd/system/ && sudo systemctl enable --now megapixels.target
SYSTEMD_DIR ?= build/systemd
systemd: $(STAMP)
	mkdir -p $(dir $(SYSTEMD_DIR))
	printf 'PATH=%s\nMEGAPIXELS_CONFIG=%s\nPYTHONUNBUFFERED=1\nDISPLAY=%s\nMEGAPIXELS_MATCHERS=%s\nOPENBLAS_NUM_THREADS=1\n' \
	  "$(abspath $(BIN)):/usr/local/bin:/usr/bin:/bin" "$${MEGAPIXELS_CONFIG:-$(abspath config/kiosk.toml)}" "$${DISPLAY:-:0}" \
	  "$(or $(filter-out 0,$(MATCHERS)),1)" > $(SYSTEMD_DIR).env
	$(BIN)/honcho export systemd $(SYSTEMD_DIR) -a megapixels -t deploy/systemd -e $(SYSTEMD_DIR).env \
	  -c matcher=$(MATCHERS) -u $${KIOSK_USER:-$$(id -un)}

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf build test-artifacts
