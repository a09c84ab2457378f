# The commands: `make demo`, `make test` (everything, as CI) and `make test-fast` (the edit loop: no
# tests marked slow). All create .venv and install first.
PYTHON ?= python3.11
# pytest-xdist workers; tests of one module share a worker (module fixtures are built once).
TEST_WORKERS ?= 2
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# TF.js (npm, exact pins in tests/js/package-lock.json) for the TF.js export tests; skipped without npm.
JS_STAMP := tests/js/node_modules/.installed

.PHONY: demo test test-fast lint install clean

$(STAMP): setup.py tests/oracle-requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,pretrained,tflite,serving,onnx,openvino]"
	$(PY) -m pip install --quiet --no-deps -r tests/oracle-requirements.txt
	touch $(STAMP)

$(JS_STAMP): tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd tests/js && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the TF.js export tests will be skipped (apt-get install nodejs npm)"; fi

install: $(STAMP) $(JS_STAMP)

demo: $(STAMP)
	$(VENV)/bin/real-esrgan-tf upscale --input real_esrgan_tf/samples --output results --model realesrgan-x4plus

lint: $(STAMP)
	$(VENV)/bin/ruff check $(wildcard real_esrgan_tf tests benchmarks pipelines)

# The browser tests (tests/test_export_web.py) need Debian's Chromium; -rs prints every skip's reason.
BROWSER_CHECK := test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || echo "make test: Chromium not \
installed, the browser tests are SKIPPED (enable them: apt-get install -y chromium chromium-driver)"

test: $(STAMP) $(JS_STAMP) lint
	@$(BROWSER_CHECK)
	$(PY) -m pytest -q -rs -n $(TEST_WORKERS) --dist loadscope --durations=15 tests

test-fast: $(STAMP) $(JS_STAMP) lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=10 -m "not slow" tests

clean:
	rm -rf $(VENV) results
