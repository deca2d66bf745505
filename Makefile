# posejax: the two commands are `make compare` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOP_DOWN ?= regression,heatmap,segmentation
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

test: setup lint
	$(VENV)/bin/pytest -q

data: setup
	$(PY) -m posejax.data.build synthetic_people --config multi --data-dir data

# E1 quick: every formulation on the same backbone, data and budget, then the mean-pose
# baseline, then one table. Re-running resumes/reuses finished runs.
compare: data
	$(PY) -m posejax.train -m experiment=e1_quick formulation=$(TOP_DOWN) \
	  hydra.sweep.dir=$(QUICK)/runs 'hydra.sweep.subdir=$${hydra:runtime.choices.formulation}'
	$(PY) -m posejax.train -m experiment=e1_quick_paf \
	  hydra.sweep.dir=$(QUICK)/runs 'hydra.sweep.subdir=$${hydra:runtime.choices.formulation}'
	$(PY) -m posejax.evaluation.baseline experiment=e1_quick run_dir=$(QUICK)/runs/mean_pose
	$(PY) -m posejax.experiments.summarize $(QUICK)/runs --out $(QUICK) \
	  --title "E1 quick: formulation comparison (synthetic multi, validation)" \
	  --command "make compare" --metrics PCK@0.2 PCK@0.2_torso OKS_AP OKS_AP50 mIoU \
	  ms_per_image train_steps train_batch_size --plot ms_per_image PCK@0.2 --hue run

# Speed benchmarks (scripts, not tests): JSON + markdown tables in benchmarks/results/.
bench: data
	$(PY) benchmarks/run_all.py

clean:
	rm -rf runs multirun outputs results/quick
