# Two entry points: `make demo` (set up + run the offline ABKD demo) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: setup setup-sampling demo test benchmark clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0          # the CPU build; a GPU machine may install its CUDA build instead
	$(PIP) install -e ".[dev]"
	touch $@

# PyG's NeighborLoader needs pyg-lib (PyG's own wheel index) or torch-sparse (a PyPI source
# package, built here against the installed torch: ~10 min on 2 cores the first time, cached after).
$(VENV)/.sampling: $(VENV)/.installed
	$(PIP) install --no-build-isolation torch-scatter==2.1.2 torch-sparse==0.6.18
	touch $@

setup: $(VENV)/.installed

setup-sampling: $(VENV)/.sampling

demo: setup
	$(PY) main.py fit --config configs/abkd_demo_teacher.yaml
	$(PY) main.py fit --config configs/abkd_demo.yaml
	$(PY) main.py test --config configs/abkd_demo.yaml --ckpt_path checkpoints/abkd_demo_student/best.ckpt

test: setup setup-sampling
	$(PY) -m pytest

clean:
	rm -rf logs checkpoints data outputs
