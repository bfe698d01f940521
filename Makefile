# make demo  - create .venv, install workbench, run the main job on the embedded ResNet-50
# make test  - create .venv, install workbench with test extras, run every test
# make quick - the same without the tests marked slow (> ~5 s each)
# make lab   - start JupyterLab on notebooks/ from the venv
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: demo test quick lab venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt hatch_build.py workbench/kernels/cpu/_native.c | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[test,notebook]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/workbench demo

test: $(STAMP)
	$(PY) -m pytest -q

quick: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lab: $(STAMP)
	$(PIP) install -q -c constraints.txt jupyterlab
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) out build dist *.egg-info
