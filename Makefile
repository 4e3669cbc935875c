# One command runs the main job, one runs the tests (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test-only: the `yolov5` package builds real YOLOv5 models for tests/test_yolov5_import.py. It is installed
# without its long dependency list (ultralytics' own deps, boto3, roboflow, tensorboard, sahi ...); the
# second list is what its models/yolo.py imports (setuptools<81 still ships pkg_resources).
YOLOV5_TEST_PKGS := yolov5==7.0.14 ultralytics==8.4.190
YOLOV5_TEST_DEPS := pandas requests psutil tqdm seaborn 'setuptools<81'

.PHONY: run test install clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps $(YOLOV5_TEST_PKGS)
	$(BIN)/pip install -q $(YOLOV5_TEST_DEPS)
	touch $(STAMP)

install: $(STAMP)

# Main job: semi-supervised training on the bundled demo dataset (10% labeled) with its profile, in minutes on 2 cores.
run: $(STAMP)
	$(BIN)/effteacher train --data demo

test: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) runs .cache
