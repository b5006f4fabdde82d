# Set-up on a fresh machine is two commands:
#   make notebooks   # runs the whole notebook series on the embedded tiny model (CPU is enough)
#   make test        # runs the test suite (library tests + every notebook through nbmake + the website)
# Both create .venv on first use; `make test` also creates .venv-lmms, which adds the lmms extra.
# lmms-eval lives apart because its timm imports torchvision, and PyPI's torchvision for torch 2.13
# is a CUDA build that cannot import beside a CPU torch (nor can timm then, nor `accelerate launch`,
# whose CLI imports timm). .venv (a new one whenever pyproject.toml changes) holds neither.
# TORCH_SPEC picks the torch build installed before the package, so that pip does not resolve a
# multi-GB CUDA build first on CPU-only machines.

PYTHON ?= python3
VENV ?= .venv
LMMS_VENV ?= .venv-lmms
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
LMMS_BIN := $(LMMS_VENV)/bin
OUT ?= build/notebooks
comma := ,

.PHONY: install install-lmms notebooks test test-fast lint docs chromium clean

# $(call venv,FOLDER,EXTRAS): a virtual environment in FOLDER with torch and the package's EXTRAS.
define venv
	$(PYTHON) -m venv --clear $(1)
	$(1)/bin/pip install --quiet --upgrade pip
	$(1)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(1)/bin/pip install --quiet -e ".[$(2)]"
endef

$(BIN)/.installed: pyproject.toml
	$(call venv,$(VENV),dev)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# Where torchvision cannot import (a CUDA wheel beside a CPU torch), it goes, and timm with it;
# lmms-eval's core needs neither.
$(LMMS_BIN)/.installed: pyproject.toml
	$(call venv,$(LMMS_VENV),dev$(comma)lmms)
	$(LMMS_BIN)/python -c "import torchvision" 2>/dev/null || $(LMMS_BIN)/pip uninstall --quiet -y torchvision timm
	touch $@

install: $(BIN)/.installed

install-lmms: $(LMMS_BIN)/.installed

notebooks: install
	mkdir -p $(OUT) figures
	cd notebooks && for nb in [0-9][0-9]_*.ipynb; do \
	  echo "== $$nb"; \
	  ../$(BIN)/jupyter nbconvert --to notebook --execute "$$nb" --output-dir "../$(OUT)" \
	    --ExecutePreprocessor.timeout=1200 || exit 1; \
	done
	@echo "executed notebooks in $(OUT)/, figures in figures/"

# The replica notebook runs (the longest tests, each in its own kernel and folders) go over both
# cores, one torch thread each. The notebooks executed by nbmake are kept in $(OUT) (--save-executed),
# the website is built from them (make docs) and opened in headless Chromium (tests/site). The
# lmms-eval tests run in .venv-lmms (in .venv they skip), with the environment checks again.
test: install install-lmms
	rm -rf $(OUT)
	$(BIN)/python -m pytest tests notebooks --nbmake --nbmake-timeout=1200 -q --save-executed $(OUT) \
	  --ignore=tests/notebooks/test_notebooks_replicas.py --ignore=tests/site
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests/notebooks/test_notebooks_replicas.py -n 2 -q
	$(MAKE) docs
	$(MAKE) chromium
	$(BIN)/python -m pytest tests/site -q
	$(LMMS_BIN)/python -c "import lmms_eval"
	$(LMMS_BIN)/python -m pytest tests/core/test_lmms.py tests/core/test_lmms_loading.py tests/core/test_console_scripts.py -q

# The website of the executed series in build/site (open build/site/index.html): from the notebooks
# in $(OUT), which `make notebooks` executes first when they are not all there.
docs: install
	@[ "$$(ls $(OUT)/[0-9][0-9]_*.ipynb 2>/dev/null | wc -l)" -eq "$$(ls notebooks/[0-9][0-9]_*.ipynb | wc -l)" ] \
	  || $(MAKE) notebooks
	$(BIN)/python scripts/site.py $(OUT)

# A Chromium for tests/site: $$AVISC_CHROMIUM or one on PATH, else playwright downloads its own.
chromium: install
	@[ -n "$$AVISC_CHROMIUM" ] || command -v chromium || command -v chromium-browser || command -v google-chrome \
	  || $(BIN)/playwright install chromium

lint: install  # ruff, configured in pyproject.toml: lint rules and formatting (run `ruff format .` to fix the latter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-fast: install  # the development loop: everything but notebooks and slow tests (<= 2 min)
	$(BIN)/python -m pytest tests -m "not slow and not notebooks" -q --ignore=tests/site

clean:
	rm -rf $(VENV) $(LMMS_VENV) build .pytest_cache
