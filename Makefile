# One command runs the main job, one runs the tests (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test-only: the `yolov5` package builds real YOLOv5 models for tests/models/test_yolov5_import.py. It is installed
# without its long dependency list (ultralytics' own deps, boto3, roboflow, tensorboard, sahi ...); the
# second list is what its models/yolo.py imports (setuptools<81 still ships pkg_resources). benchmarks/peer_accuracy.py
# also runs their train entry points: yolov5.train imports roboflow (which imports requests-toolbelt, dotenv and
# pillow_avif), ultralytics' trainer polars.
YOLOV5_TEST_PKGS := yolov5==7.0.14 ultralytics==8.4.190 roboflow==1.7.3
YOLOV5_TEST_DEPS := pandas requests psutil tqdm seaborn 'setuptools<81' requests-toolbelt python-dotenv \
	'pillow-avif-plugin<2' polars
# Test-only: the libraries labeling tools import with, for tests/labeling/test_tool_import.py: datumaro (CVAT's
# COCO/YOLO importers) and label-studio-converter. Installed without their pins (datumaro asks for older pandas,
# pillow and opencv than the project's); the second list is what their importers use.
LABELING_TEST_PKGS := datumaro==1.13.12 label-studio-converter==0.0.59
LABELING_TEST_DEPS := 'attrs>=25.3' 'cachetools~=7.0' 'defusedxml~=0.7' 'imagesize~=2.0' 'json-stream~=2.4' \
	'lxml~=6.0' 'orjson~=3.10' 'pyarrow~=25.0' 'ruamel.yaml~=0.19.1' 'shapely~=2.1' nltk label-studio-tools ujson \
	'ijson~=3.2.0.post0'

.PHONY: run test test-fast install clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev,openvino]'
	$(BIN)/pip install -q --no-deps $(YOLOV5_TEST_PKGS)
	$(BIN)/pip install -q $(YOLOV5_TEST_DEPS)
	$(BIN)/pip install -q --no-deps $(LABELING_TEST_PKGS)
	$(BIN)/pip install -q $(LABELING_TEST_DEPS)
	touch $(STAMP)

install: $(STAMP)

# Main job: semi-supervised training on the bundled demo dataset (10% labeled) with its profile, in minutes on 2 cores.
run: $(STAMP)
	$(BIN)/effteacher train --data demo

test: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest tests

# The unit tests only: everything not marked slow (no training run, no subprocess), in about a minute.
test-fast: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -m "not slow" tests

clean:
	rm -rf $(VENV) runs .cache
