# Two entry points that work on a fresh machine: `make run` and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.dcobench-installed
DOCS_STAMP := $(VENV)/.dcobench-docs-installed
OUT     ?= runs/default
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

REGRESS_OUT ?= runs/ci-tiny
MICRO_OUT ?= runs/ci-micro
STUDY ?= micro_paper
STUDY_OUT ?= runs/micro-study
STUDY_REPORT ?= reports/micro-study
STUDY_LABELS ?=
RAY_ADDRESS ?= auto

.PHONY: run test test-slow test-all install clean regress baseline regress-micro baseline-micro wheel study study-power study-full bench bench-micro-run docs

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: on this platform the CUDA wheel pairs with the torchvision that open_clip/timm need.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -c constraints.txt -e '.[test,ray]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/dcobench run --methods dco,dreambooth --merge direct,ziplora --out $(OUT)
	$(VENV)/bin/dcobench report $(OUT)

# The paper's four claims on the micro world (data/studies/micro_paper.yaml): runs every claim into
# $(STUDY_OUT) (resumable), writes $(STUDY_REPORT)/ and rewrites the findings block of docs/studies.md
# from it; docs/gen.py then rewrites the README's headline block (and any other stale generated block).
# Both cores: two shards of the study's units in parallel on one folder, each process at one torch
# thread (CPU results are bit-identical at a given thread count, and at one thread a shard's cells
# are the same bits as an unsharded run's: make study reproduces the committed report exactly on a
# machine of the CPU model that made it, an AMD EPYC; another model differs at the 4th decimal, see
# docs/scale-out.md). Two processes at two threads each on two cores ran 10x+ slower when tried.
study: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/dcobench study $(STUDY) --out $(STUDY_OUT) --shard 1/2 --quiet & p=$$!; \
	OMP_NUM_THREADS=1 $(VENV)/bin/dcobench study $(STUDY) --out $(STUDY_OUT) --shard 2/2 --quiet; s=$$?; \
	wait $$p && test $$s -eq 0
	for d in $(STUDY_LABELS); do $(VENV)/bin/dcobench label $(STUDY_OUT) --attach $$d || exit 1; done
	$(VENV)/bin/dcobench study $(STUDY) --out $(STUDY_OUT) --report $(STUDY_REPORT) --readme docs/studies.md --report-only
	$(PY) docs/gen.py

# Power counted in subjects (data/studies/micro_power.yaml): DCO vs DreamBooth under both samplers
# and the two controls on every screened held-out subject (data/micro/SUBJECTS.md), the same way.
# Its outputs' committed blind labels (data/micro/labels/power*/, and anchors/ for its base-model cells) are attached to the rerun before the
# report, which is then label-corrected by them (the same cells: bit-identical at one thread on the same CPU model).
study-power:
	$(MAKE) study STUDY=micro_power STUDY_OUT=runs/micro-power STUDY_REPORT=reports/micro-power \
		STUDY_LABELS="data/micro/labels/power data/micro/labels/power2 data/micro/labels/anchors"

# The paper study at full size (data/studies/micro_paper_full.yaml: every subject claim on the 15
# screened subjects, and the step-envelope claim; 2676 cells, 308 LoRAs): too big for 2 cores, so it runs on a Ray cluster
# (RAY_ADDRESS: `auto` inside one, or ray://host:10001). Not run in the repository.
study-full: $(STAMP)
	$(VENV)/bin/dcobench study micro_paper_full --out runs/micro-paper-full --report reports/micro-paper-full \
		executor.name=ray executor.address=$(RAY_ADDRESS) --quiet

test: $(STAMP)
	$(PY) -m pytest -q

# The documentation site (mkdocs.yml, docs/) into site/: the docs extra (pinned in constraints.txt),
# the generated pages and blocks rewritten (docs/gen.py), then a build in which any warning fails.
$(DOCS_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) docs/gen.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# end-to-end tests kept out of the default run (SIGKILL resume, DreamBench on tiny SDXL, merge CLI)
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q -m "not gpu"

# Speed and memory against what users would run instead (issue 14): the CPU benchmarks, each
# printing its ratios beside their goals and appending dated rows to benchmarks/RESULTS.md.
# 8 min 41 s on the idle 2-core box (2026-11-26, /usr/bin/time -v make bench, peak RSS 1.7 GB; before
# step_profile.py joined, which adds about a minute); 31 minutes at load average 5-9 on a shared one.
# The GPU one is benchmarks/gpu_sdxl_vs_diffusers.py.
bench: $(STAMP)
	$(PY) benchmarks/train_vs_diffusers.py --steps 8 --rounds 4
	$(PY) benchmarks/step_profile.py
	$(PY) benchmarks/dco_vs_dreambooth.py --steps 8 --rounds 4
	$(PY) benchmarks/guidance.py --rounds 3
	$(PY) benchmarks/scaling.py --steps 2
	$(PY) benchmarks/scoring_throughput.py

# The micro world's default run (11-15 minutes): wall time and peak memory against their budgets.
bench-micro-run: $(STAMP)
	$(PY) benchmarks/micro_run.py

# The fidelity guard CI runs: a small deterministic run on the tiny suite against the committed baseline.
regress: $(STAMP)
	rm -rf $(REGRESS_OUT)
	$(VENV)/bin/dcobench run --suite tiny --out $(REGRESS_OUT) --quiet
	$(VENV)/bin/dcobench regress $(REGRESS_OUT) --baseline reports/baseline/tiny.json

# The same guard on a reduced micro-world run (the real models and encoders that ship with dcobench).
regress-micro: $(STAMP)
	rm -rf $(MICRO_OUT)
	$(VENV)/bin/dcobench run --config data/configs/micro_ci.yaml --methods dco,dreambooth --out $(MICRO_OUT) --quiet
	$(VENV)/bin/dcobench regress $(MICRO_OUT) --baseline reports/baseline/micro.json

baseline-micro: $(STAMP)
	rm -rf $(MICRO_OUT)
	$(VENV)/bin/dcobench run --config data/configs/micro_ci.yaml --methods dco,dreambooth --out $(MICRO_OUT) --quiet
	$(VENV)/bin/dcobench regress $(MICRO_OUT) --update reports/baseline/micro.json

# After an intended change of scores: rewrite the baseline (tolerances kept), then commit it.
baseline: $(STAMP)
	rm -rf $(REGRESS_OUT)
	$(VENV)/bin/dcobench run --suite tiny --out $(REGRESS_OUT) --quiet
	$(VENV)/bin/dcobench regress $(REGRESS_OUT) --update reports/baseline/tiny.json

# dist/dcobench-*.whl: the package with data/ (configs, the micro world) inside it as dcobench.data
wheel: $(STAMP)
	$(PY) -m build --outdir dist .

clean:
	rm -rf $(VENV) runs build dist
