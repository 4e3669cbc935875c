# One command runs the main job, one runs the tests (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Main job: semi-supervised training on the bundled sample dataset with the default --labeled.
run: $(STAMP)
	$(BIN)/effteacher train --data sample

test: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) runs .cache
