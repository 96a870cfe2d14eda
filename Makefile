# stylseg: two commands for a newcomer — `make reproduce` and `make test`.
# Both create .venv (Python 3.10+) and install the kit on first use; both are idempotent.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
RUN    ?= runs/workshop
# the workshop profile: every lesson's effect visible, about 25 min on 2 cores (PROFILE=smoke: the 3-6 min CI size)
PROFILE ?= workshop
THREADS ?= 2
export OMP_NUM_THREADS ?= $(THREADS)
export MKL_NUM_THREADS ?= $(THREADS)
export STYLSEG_THREADS ?= $(THREADS)
export PYTHONUNBUFFERED = 1

.PHONY: install reproduce test test-slow test-notebooks bench lab clean-notebooks help gpu-check gpu-wheels

help:
	@echo "make reproduce   # all notebooks, $(PROFILE) profile, built-in synthetic data -> $(RUN)/"
	@echo "make test        # the test suite (what CI runs)"
	@echo "make test-slow   # slow-marked checks (paper-profile steps on CPU)"
	@echo "make bench       # benchmarks (print figures)"
	@echo "make lab         # JupyterLab on notebooks/"
	@echo "make gpu-check   # on a GPU: paper-profile speed and memory, a short notebook chain (about 4 min)"
	@echo "make gpu-wheels  # with internet: wheels for a GPU machine that has torch but no internet (.whl/)"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned, so that no newer (multi-GB) build is resolved
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[dev,lab]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed

reproduce: install
	$(VENV)/bin/stylseg reproduce --profile $(PROFILE) --out $(RUN)

test: install
	$(PY) -m pytest -q -m "not slow" --timeout=1200 tests

test-slow: install
	$(PY) -m pytest -q -m slow tests

bench: install
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lab: install
	$(VENV)/bin/jupyter lab notebooks/

# A GPU machine may have torch but not the kit's other packages and no internet: `make gpu-wheels` (here) puts
# them in .whl/, and `make gpu-check` (there) installs them into a folder on PYTHONPATH first. It runs with the
# .venv when there is one, else with the machine's python3.
GPU_PY ?= $(shell test -x $(PY) && echo $(PY) || echo python3)
GPU_SITE ?= /tmp/stylseg-site

gpu-wheels: install
	$(PY) tools/gpu_wheels.py --dest .whl

gpu-check:
	@if ls .whl/*.whl >/dev/null 2>&1; then \
	  $(GPU_PY) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $(GPU_SITE) .whl/*.whl; fi
	PYTHONPATH="$(CURDIR):$(GPU_SITE)$${PYTHONPATH:+:$$PYTHONPATH}" $(GPU_PY) tools/gpu_check.py

clean-notebooks:
	$(PY) -m stylseg.reproduce --strip notebooks/*.ipynb
