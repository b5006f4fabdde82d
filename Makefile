# Set-up on a fresh machine is two commands:
#   make notebooks   # runs the whole notebook series on the embedded tiny model (CPU is enough)
#   make test        # runs the test suite (library tests + every notebook through nbmake)
# Both create .venv on first use. TORCH_SPEC picks the torch build installed before the package,
# so that pip does not resolve a multi-GB CUDA build first on CPU-only machines.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
OUT ?= build/notebooks

.PHONY: install notebooks test test-fast clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev,lmms]"
	# PyPI's torchvision is a CUDA build: beside a CPU torch it fails to import, and transformers with it.
	$(BIN)/python -c "import torchvision" 2>/dev/null || $(BIN)/pip uninstall --quiet -y torchvision
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(BIN)/.installed

notebooks: install
	mkdir -p $(OUT) figures
	cd notebooks && for nb in [0-9][0-9]_*.ipynb; do \
	  echo "== $$nb"; \
	  ../$(BIN)/jupyter nbconvert --to notebook --execute "$$nb" --output-dir "../$(OUT)" \
	    --ExecutePreprocessor.timeout=1200 || exit 1; \
	done
	@echo "executed notebooks in $(OUT)/, figures in figures/"

test: install
	$(BIN)/python -m pytest tests notebooks --nbmake --nbmake-timeout=1200 -q

test-fast: install  # the development loop: everything but notebooks and slow tests (<= 2 min)
	$(BIN)/python -m pytest tests -m "not slow and not notebooks" -q

clean:
	rm -rf $(VENV) build .pytest_cache
