# Two entry points: `make demo` (set up + run the offline ABKD demo) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: setup setup-sampling sampling-torch-sparse torch-sparse-metis-wheel demo test lint benchmark clean graphs

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0          # the CPU build; a GPU machine may install its CUDA build instead
	$(PIP) install -e ".[dev]"
	touch $@

# PyG's NeighborLoader needs pyg-lib or torch-sparse, and PyG's distributed Partitioner needs METIS (inside
# either). First choice: PyG's own pyg-lib wheel for the installed torch from data.pyg.org (seconds; quiet, 10 s
# timeout, no retries, so an offline machine moves on at once). Fallback, when that index is unreachable or has
# no wheel for this torch: torch-scatter/torch-sparse, PyPI source packages built here against the installed
# torch. torch-sparse hands METIS int64 arrays, so it needs METIS built with
# 64-bit ids (Debian's and cmeel's libmetis are 32-bit): METIS 5.1 is compiled from the copy vendored in
# pymetis's PyPI sdist into a static library that torch-sparse links (WITH_METIS=1; LDFLAGS' -L comes
# before the system's, LIBRARY_PATH's after, so a Debian libmetis.so would win). pip's own wheel cache
# cannot tell a METIS build from a plain one, so the wheel is built with --no-cache-dir and kept in our
# own wheelhouse, one per Python and torch version: 15-50 min on 2 shared cores the first time (measured 15 and
# 48 min at load averages 8 and 13), seconds after. Either path ends with a check that METIS separates two
# disjoint triangles (a 32-bit METIS crashes it).
PYG_WHEELS = https://data.pyg.org/whl/torch-$(shell $(PY) -c "import torch; print(torch.__version__)").html
TRIANGLES := torch.tensor([0, 2, 4, 6, 8, 10, 12]), torch.tensor([1, 2, 0, 2, 0, 1, 4, 5, 3, 5, 3, 4])
SEPARATED := len(set(part[:3].tolist())) == len(set(part[3:].tolist())) == 1 and part[0] != part[3], part
METIS_DIR := $(VENV)/metis
METIS_SRC := $(METIS_DIR)/pymetis-2025.2.2/src/metis
METIS_CFLAGS := -O3 -fPIC -std=c99 -D_GNU_SOURCE -DLINUX -D_FILE_OFFSET_BITS=64 -DNDEBUG -DNDEBUG2
SPARSE_WHEELHOUSE = $(HOME)/.cache/gnn-face-kd/$(shell $(PY) -c \
	"import sys, torch; print(f'cp{sys.version_info[0]}{sys.version_info[1]}-torch-{torch.__version__}')")

$(VENV)/.sampling-metis: $(VENV)/.installed
	@start=$$(date +%s); \
	if $(PIP) install -q --timeout 10 --retries 0 --no-index --find-links "$(PYG_WHEELS)" pyg-lib >/dev/null 2>&1 \
		&& $(PY) -c "import torch, pyg_lib; part = pyg_lib.partition.metis($(TRIANGLES), 2); assert $(SEPARATED)"; \
	then echo "setup-sampling: pyg-lib from $(PYG_WHEELS) in $$(($$(date +%s) - start)) s"; \
	else echo "setup-sampling: no pyg-lib wheel from $(PYG_WHEELS) ($$(($$(date +%s) - start)) s);" \
		"building torch-sparse with METIS (15-50 min the first time)"; \
		$(MAKE) --no-print-directory sampling-torch-sparse \
		&& echo "setup-sampling: torch-sparse with METIS in $$(($$(date +%s) - start)) s"; fi
	touch $@

sampling-torch-sparse: $(VENV)/.installed
	$(PIP) install --no-build-isolation torch-scatter==2.1.2
	ls $(SPARSE_WHEELHOUSE)/torch_sparse-0.6.18-*.whl >/dev/null 2>&1 || $(MAKE) torch-sparse-metis-wheel
	$(PIP) install --force-reinstall --no-deps $(SPARSE_WHEELHOUSE)/torch_sparse-0.6.18-*.whl
	$(PY) -c "import torch, torch_sparse; part = torch.ops.torch_sparse.partition($(TRIANGLES), None, 2, False); \
		assert $(SEPARATED)" || { echo "torch-sparse has no working METIS: delete $(SPARSE_WHEELHOUSE) and rerun"; exit 1; }

# Builds METIS (64-bit ids) and a torch-sparse wheel linked to it into $(SPARSE_WHEELHOUSE).
torch-sparse-metis-wheel: $(VENV)/.installed
	rm -rf $(METIS_DIR) && mkdir -p $(METIS_DIR)/gklib $(METIS_DIR)/libmetis $(METIS_DIR)/wheel
	$(PIP) download --no-deps --no-binary pymetis pymetis==2025.2.2 -d $(METIS_DIR)
	tar xzf $(METIS_DIR)/pymetis-2025.2.2.tar.gz -C $(METIS_DIR)
	grep -q "define IDXTYPEWIDTH 64" $(METIS_SRC)/include/metis.h
	cd $(METIS_DIR)/gklib && gcc $(METIS_CFLAGS) -I$(abspath $(METIS_SRC))/GKlib -c $(abspath $(METIS_SRC))/GKlib/*.c
	cd $(METIS_DIR)/libmetis && gcc $(METIS_CFLAGS) $(addprefix -I$(abspath $(METIS_SRC))/,GKlib include libmetis) \
		-c $(abspath $(METIS_SRC))/libmetis/*.c
	ar rcs $(METIS_DIR)/libmetis.a $(METIS_DIR)/gklib/*.o $(METIS_DIR)/libmetis/*.o
	WITH_METIS=1 CPATH=$(abspath $(METIS_SRC))/include LDFLAGS=-L$(abspath $(METIS_DIR)) \
		$(PIP) wheel --no-build-isolation --no-cache-dir --no-deps -w $(METIS_DIR)/wheel torch-sparse==0.6.18
	mkdir -p $(SPARSE_WHEELHOUSE) && mv $(METIS_DIR)/wheel/torch_sparse-0.6.18-*.whl $(SPARSE_WHEELHOUSE)/

setup: $(VENV)/.installed

setup-sampling: $(VENV)/.sampling-metis

# Each fit writes a new checkpoints/<run>/version_<N>; a checkpoint folder means its newest version's best.ckpt.
demo: setup
	$(PY) main.py fit --config configs/abkd_demo_teacher.yaml
	$(PY) main.py fit --config configs/abkd_demo.yaml
	$(PY) main.py test --config configs/abkd_demo.yaml --ckpt_path checkpoints/abkd_demo_student

# The real graphs of ../shared/assets where the configs and experiments read them (data/planetoid/<Name>/raw,
# data/pyg/<Name>/raw); PyG writes processed/ beside raw/ on first use.
SHARED_GRAPHS ?= ../shared/assets/graphs
graphs:
	@test -d $(SHARED_GRAPHS) || { echo "no $(SHARED_GRAPHS): set SHARED_GRAPHS=<folder with planetoid/ and pyg/>"; exit 1; }
	mkdir -p data/planetoid/Cora/raw data/planetoid/CiteSeer/raw data/pyg
	cp $(SHARED_GRAPHS)/planetoid/ind.cora.* data/planetoid/Cora/raw/
	cp $(SHARED_GRAPHS)/planetoid/ind.citeseer.* data/planetoid/CiteSeer/raw/
	cp -r $(SHARED_GRAPHS)/pyg/. data/pyg/

test: setup setup-sampling
	$(PY) -m pytest

# Style, types and the import contract of docs/architecture.md (settings in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf logs checkpoints data outputs
