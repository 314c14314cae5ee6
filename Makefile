# biogpt-train — every target runs inside .venv, which `make install` creates.
# GPU users: make install TORCH_SPEC="torch==2.5.1" TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
STAMP := $(VENV)/.installed

.PHONY: install test test-fast run bench bench-quick reproduce-mini collect clean help

help:
	@echo "make install         create .venv with torch ($(TORCH_SPEC)), fastBPE and the project (editable)"
	@echo "make run             the built-in default: pretrain a small model on the shipped PubMed sample (CPU, minutes)"
	@echo "make test            the whole test suite (what CI runs)"
	@echo "make test-fast       the quick tier: everything not marked slow (< 2 min on 2 quiet cores)"
	@echo "make bench           throughput against transformers (interleaved, medians); writes bench/results/README.md"
	@echo "make bench-quick     the small configurations only (< 3 min); writes bench/results/quick.md"
	@echo "make reproduce-mini  pretrain + fine-tune + decode + score on ../shared/data (CPU, < 30 min)"
	@echo "make collect         gather every runs/**/results.json into runs/table.{md,csv}"

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	# fastBPE 0.1.0 compiles against Cython/numpy at install time and has no build isolation metadata.
	$(PY) -m pip install -q Cython numpy setuptools wheel
	$(PY) -m pip install -q --no-build-isolation fastBPE==0.1.0
	$(PY) -m pip install -q -e ".[dev,cluster]"
	touch $(STAMP)

run: install
	$(PY) -m biogpt_train

test: install
	$(PY) -m pytest -q

# The developer loop: slow tests (real-data sweeps, subprocess runs, whole-corpus parity) are left to `make test`.
test-fast: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -x -m "not slow" -p no:cacheprovider

bench: install
	$(PY) -m bench

bench-quick: install
	$(PY) -m bench --quick

# writes runs/reproduce_mini; OUT=experiments/results replaces the committed results
OUT ?= runs/reproduce_mini
reproduce-mini: install
	$(PY) -m experiments.reproduce_mini --out $(OUT)

collect: install
	$(PY) -m experiments.collect runs --out runs/table

clean:
	rm -rf runs outputs multirun .pytest_cache
