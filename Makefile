# Two entry points: `make demo` (set up + run the offline ABKD demo) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: setup setup-sampling torch-sparse-metis-wheel metis-torch-sparse demo test lint benchmark clean graphs

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0          # the CPU build; a GPU machine may install its CUDA build instead
	$(PIP) install -e ".[dev]"
	touch $@

# PyG's NeighborLoader needs pyg-lib or torch-sparse; METIS partitioning needs either one's METIS; PyG's
# DistNeighborLoader needs pyg-lib. scripts/setup_sampling.py installs the first that works, printing which and how
# long: pyg-lib from the wheelhouse(s), then from the cache, then from PyG's wheel index (quiet, 10 s timeout, no
# retries: offline it gives up at once); else torch-scatter + torch-sparse with METIS, from the same folders, else
# built into the cache (the last resort: an hour on 2 shared cores, seconds for every later set-up with this Python
# and torch). A wheel is used only when its name fits this Python, its SHA-256 matches the folder's SHA256SUMS
# (where there is one) and, installed, it loads with this torch and METIS separates two disjoint triangles.
WHEELHOUSE ?= ../shared/wheels
SAMPLING_CACHE ?= $(HOME)/.cache/gnn-face-kd/$(shell $(PY) -c \
	"import sys, importlib.metadata as m; print(f'cp{sys.version_info[0]}{sys.version_info[1]}-torch-{m.version(\"torch\")}')")

$(VENV)/.sampling: $(VENV)/.installed scripts/setup_sampling.py
	$(PY) scripts/setup_sampling.py $(addprefix --wheelhouse ,$(WHEELHOUSE)) \
		--build "$(MAKE) --no-print-directory torch-sparse-metis-wheel SAMPLING_CACHE={cache}"
	touch $@

# torch-scatter and torch-sparse wheels, built from their PyPI sources against the installed torch, into
# $(SAMPLING_CACHE) with their SHA256SUMS (each only if missing there). torch-sparse hands METIS int64 arrays, so it
# needs METIS built with 64-bit ids (Debian's and cmeel's libmetis are 32-bit): METIS 5.1 is compiled from the copy
# vendored in pymetis's PyPI sdist into a static library that torch-sparse links (WITH_METIS=1; LDFLAGS' -L comes
# before the system's, LIBRARY_PATH's after, so a Debian libmetis.so would win). pip's own wheel cache cannot tell a
# METIS build from a plain one, hence --no-cache-dir. Measured: 3,532 s for both on 2 loaded cores.
METIS_DIR := $(VENV)/metis
METIS_SRC := $(METIS_DIR)/pymetis-2025.2.2/src/metis
METIS_CFLAGS := -O3 -fPIC -std=c99 -D_GNU_SOURCE -DLINUX -D_FILE_OFFSET_BITS=64 -DNDEBUG -DNDEBUG2

torch-sparse-metis-wheel: $(VENV)/.installed
	mkdir -p "$(SAMPLING_CACHE)"
	ls "$(SAMPLING_CACHE)"/torch_scatter-2.1.2-*.whl >/dev/null 2>&1 || $(PIP) wheel --no-build-isolation \
		--no-cache-dir --no-deps -w "$(SAMPLING_CACHE)" torch-scatter==2.1.2
	ls "$(SAMPLING_CACHE)"/torch_sparse-0.6.18-*.whl >/dev/null 2>&1 || $(MAKE) --no-print-directory metis-torch-sparse
	cd "$(SAMPLING_CACHE)" && sha256sum *.whl > SHA256SUMS

metis-torch-sparse: $(VENV)/.installed
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
	mv $(METIS_DIR)/wheel/torch_sparse-0.6.18-*.whl "$(SAMPLING_CACHE)"/

setup: $(VENV)/.installed

setup-sampling: $(VENV)/.sampling

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

# The suite runs on TEST_WORKERS processes (pytest-xdist; each test uses one torch thread, see tests/conftest.py);
# worksteal hands the long tests out first-come so one worker does not end with a queue of them.
TEST_WORKERS ?= 2
test: setup setup-sampling
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

# Style, types and the import contract of docs/architecture.md (settings in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf logs checkpoints data outputs
