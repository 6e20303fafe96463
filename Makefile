# Quick start:  make demo   (install, make synthetic data, train, evaluate)
#               make test   (install, run the test suite)
VENV ?= .venv
PYTHON := $(VENV)/bin/python
DATA_ROOT ?= data/synthetic_fgvc
DEMO_CONFIG ?= configs/daf_r18_synthetic.py
DEMO_WORK_DIR ?= work_dirs/demo
# The synthetic set the demo trains on (a CUB_200_2011 root).
SYNTH_ARGS ?= --num-classes 10 --train-per-class 100 --test-per-class 20 --img-size 64 --part-scale 1.6 --seed 0
PYTEST_ARGS ?=

.PHONY: install demo data pretrained test lint clean-demo

install:
	bash tools/install.sh

$(DATA_ROOT)/images.txt: | install
	$(PYTHON) tools/misc/make_synthetic_fgvc.py --out $(DATA_ROOT) $(SYNTH_ARGS)

data: $(DATA_ROOT)/images.txt

# The generic pretrained checkpoint the synthetic configs start from (cached).
pretrained: install
	$(PYTHON) tools/misc/pretrain_synthetic.py

demo: install data pretrained
	bash tools/misc/demo.sh $(PYTHON) $(DEMO_CONFIG) $(DEMO_WORK_DIR) $(DATA_ROOT)

test: install
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean-demo:
	rm -rf $(DEMO_WORK_DIR)
