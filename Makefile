# posejax: the two commands are `make compare` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
QUICK := results/quick

.PHONY: setup lint format test compare data bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Two pytest workers; each test module stays on one worker (--dist loadfile), so module
# fixtures (the tiny training runs several tests share) are built once.
PYTEST_WORKERS ?= 2
test: setup lint
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist loadfile

data: setup
	$(PY) -m posejax.data.build synthetic_people --config multi --data-dir data

# E1 quick: every formulation on the same backbone, data and budget, then the mean-pose
# baseline, the oracle rows (each formulation's own targets decoded: the ceiling of its
# encoding, decoding and parsing), the learning curves and one table. The top-down
# formulations swept are listed in conf/experiment/e1_quick.yaml (hydra.sweeper.params).
# Re-running resumes/reuses finished runs.
E1_RUNS := $(QUICK)/runs
# Trained runs of the sweep: the folders holding checkpoints (found when the recipe runs).
E1_TRAINED = $$(for d in $(E1_RUNS)/*/checkpoints; do dirname $$d; done)
compare: data
	$(PY) -m posejax.train -m experiment=e1_quick \
	  hydra.sweep.dir=$(E1_RUNS) 'hydra.sweep.subdir=$${hydra:runtime.choices.formulation}'
	$(PY) -m posejax.train -m experiment=e1_quick_paf \
	  hydra.sweep.dir=$(E1_RUNS) 'hydra.sweep.subdir=$${hydra:runtime.choices.formulation}'
	$(PY) -m posejax.evaluation.baseline experiment=e1_quick run_dir=$(E1_RUNS)/mean_pose
	for run in $(E1_TRAINED); do \
	  $(PY) -m posejax.evaluate $$run --oracle --num-images 300 \
	    --out $(E1_RUNS)/oracle/$$(basename $$run) > /dev/null || exit 1; \
	done
	$(PY) -m posejax.experiments.learning_curves $(E1_TRAINED) \
	  --out $(QUICK) --title "E1 quick: validation metrics during training"
	$(PY) -m posejax.experiments.summarize $(E1_RUNS) --out $(QUICK) \
	  --title "E1 quick: formulation comparison (synthetic multi, validation)" \
	  --command "make compare" --metrics OKS_AP OKS_AP50 OKS_APm OKS_APl PCK@0.2 \
	  PCK@0.2_torso mIoU people_found_ratio ms_per_image train_steps train_batch_size \
	  train_minutes --plot ms_per_image OKS_AP --hue run

# Speed benchmarks (scripts, not tests): JSON + markdown tables in benchmarks/results/.
bench: data
	$(PY) benchmarks/run_all.py

clean:
	rm -rf runs multirun outputs results/quick
