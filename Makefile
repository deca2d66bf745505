# posejax: the two commands are `make compare` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
QUICK := results/quick

.PHONY: setup lint format test compare data bench clean e7 notebooks

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The native CPU convolution (posejax/kernels; x86-64 with AVX-512). Where it cannot be built
# the build says why and posejax keeps XLA's convolutions.
KERNELS := posejax/kernels/_conv3x3_cpu.so
$(KERNELS): posejax/kernels/conv3x3_cpu.cc posejax/kernels/build.py $(VENV)/.installed
	$(PY) -m posejax.kernels.build

setup: $(VENV)/.installed $(KERNELS)

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

# E1 quick: every formulation on the same backbone, data and budget, and the person detector,
# then the top-down formulations once more on the detector's boxes (rows "<run>+detector"), the
# mean-pose baseline, the oracle rows (each formulation's own targets decoded: the ceiling of
# its encoding, decoding and parsing), the learning curves, one table and one report
# (results/quick/report.md: table, plots, per-joint PCK, the same images through every run).
# The top-down formulations swept are listed in conf/experiment/e1_quick.yaml.
# Re-running resumes/reuses finished runs.
E1_RUNS := $(QUICK)/runs
# Trained runs of the sweep: the folders holding checkpoints (found when the recipe runs).
E1_TRAINED = $$(for d in $(E1_RUNS)/*/checkpoints; do dirname $$d; done)
# The top-down runs: the formulations e1_quick.yaml sweeps (read from the YAML, not repeated).
E1_TOP_DOWN = $$($(PY) -c "from omegaconf import OmegaConf as C; \
  print(C.load('conf/experiment/e1_quick.yaml').hydra.sweeper.params.formulation.replace(',', ' '))")
compare: data
	$(PY) -m posejax.train -m experiment=e1_quick \
	  hydra.sweep.dir=$(E1_RUNS) 'hydra.sweep.subdir=$${hydra:runtime.choices.formulation}'
	$(PY) -m posejax.train -m experiment=e1_quick_paf \
	  hydra.sweep.dir=$(E1_RUNS) 'hydra.sweep.subdir=$${hydra:runtime.choices.formulation}'
	$(PY) -m posejax.train -m experiment=e1_quick_detector \
	  hydra.sweep.dir=$(E1_RUNS) 'hydra.sweep.subdir=$${hydra:runtime.choices.formulation}'
	for run in $(E1_TOP_DOWN); do \
	  $(PY) -m posejax.evaluate $(E1_RUNS)/$$run --detector $(E1_RUNS)/detector \
	    --num-images 300 --out $(E1_RUNS)/$$run+detector > /dev/null || exit 1; \
	done
	$(PY) -m posejax.evaluation.baseline experiment=e1_quick run_dir=$(E1_RUNS)/mean_pose
	for run in $(E1_TRAINED); do \
	  $(PY) -m posejax.evaluate $$run --oracle --num-images 300 \
	    --out $(E1_RUNS)/oracle/$$(basename $$run) > /dev/null || exit 1; \
	done
	$(PY) -m posejax.experiments.learning_curves $(E1_TRAINED) --metrics OKS_AP PCK@0.2 \
	  box_AP50 --out $(QUICK) --title "E1 quick: validation metrics during training"
	$(PY) -m posejax.experiments.summarize $(E1_RUNS) --out $(QUICK) \
	  --title "E1 quick: formulation comparison (synthetic multi, validation)" \
	  --command "make compare" --metrics OKS_AP OKS_AP50 OKS_APm OKS_APl PCK@0.2 \
	  PCK@0.2_torso mIoU box_AP box_AP50 people_found_ratio ms_per_image train_steps \
	  train_batch_size train_minutes --plot ms_per_image OKS_AP --hue run
	$(PY) -m posejax.experiments.report $(E1_RUNS) --out $(QUICK) --detector $(E1_RUNS)/detector \
	  --title "E1 quick: report" --command "make compare" --metrics OKS_AP OKS_APm PCK@0.2 \
	  mIoU box_AP50 people_found_ratio ms_per_image train_steps train_batch_size train_minutes

# The notebooks, executed on the quick comparison's runs and written with their outputs.
notebooks: setup
	$(PY) notebooks/_execute.py --runs $(E1_RUNS)

# E7 (experiments/e7_early_commitment): early commitment, on E1's runs (run `make compare`
# first): heatmap on the detector's boxes vs PAF bottom-up, against crowding.
e7:
	$(PY) -m posejax.experiments.early_commitment --top-down $(E1_RUNS)/heatmap \
	  --detector $(E1_RUNS)/detector --bottom-up $(E1_RUNS)/paf_quick --num-images 300 \
	  --out experiments/e7_early_commitment/results/quick

# Speed benchmarks (scripts, not tests): JSON + markdown tables in benchmarks/results/.
bench: data
	$(PY) benchmarks/run_all.py

clean:
	rm -rf runs multirun outputs results/quick
