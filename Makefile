# jaxdl — two commands on a fresh machine:
#   make sweep   create .venv and run the main job: the MNIST MLP Optuna sweep
#                (SQLite storage in studies/mnist_mlp; re-running continues it)
#   make test    create .venv and run the test suite
#   (make notebooks executes the notebooks; .ci/run runs both)
VENV ?= .venv
PY := $(VENV)/bin/python
JAXDL := $(VENV)/bin/jaxdl
PYTHON ?= python3

.PHONY: env sweep train test notebooks lint bench clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

sweep: env
	$(JAXDL) sweep sweeps/mnist_mlp.yaml

# --resume: a second `make train` finishes a killed run or reports the finished one.
train: env
	$(JAXDL) train experiments/mnist_mlp.yaml --resume

# -n auto: one pytest worker per core (pytest-xdist); each test file runs in
# one worker, so its tests share that process's compiled programs.
test: env
	$(PY) -m pytest -q -n auto --dist loadfile

# The notebooks, each executed top to bottom in a fresh kernel (real
# training: kept out of `make test`; .ci/run runs them too).
notebooks: env
	$(PY) -m pytest -q -n auto --dist loadfile -m notebook --durations=5 \
		tests/test_notebooks.py tests/test_notebooks_more.py

lint: env
	$(VENV)/bin/ruff check jaxdl tests benchmarks

bench: env
	$(PY) benchmarks/mnist_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
