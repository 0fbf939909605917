# Set-up is part of every target: a fresh machine needs only `make demo` or `make test`.
VENV   := .venv
PIP    := $(VENV)/bin/pip
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# the install peaks near 9 GB: .venv ends at about 7.3 GB (torch's CUDA wheels 5.6, TensorFlow for the
# converter tests), plus pip's unpacked wheels in $TMPDIR; fail early with the numbers, not mid-install
NEED_GB := 10

.PHONY: setup demo test bench docs lint check-disk

setup: $(VENV)/.installed $(FMNIST)

check-disk:
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ "$$free" -lt $(NEED_GB) ]; then \
	  echo "robust-zoo set-up needs about $(NEED_GB) GB free on the disk of $$(pwd) (torch's CUDA wheels," \
	       "TensorFlow, pip's temporary files); it has $$free GB. Free some space and run make again." >&2; \
	  exit 1; fi

$(VENV)/.installed: pyproject.toml
	@$(MAKE) --no-print-directory check-disk
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torchvision 0.29.1 pulls the torch build that works here (CUDA wheels also run on CPU)
	$(PIP) install --quiet "torchvision==0.29.1" -e ".[dev]"
	touch $@

$(FMNIST):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q dataset-fashion-mnist

# the tests also check the converters against the sources' own code: TensorFlow (an optional extra) and
# RobustBench's architecture files (its wheel pins old timm, so --no-deps; the tests load single files from it)
$(VENV)/.test-extras: $(VENV)/.installed
	$(PIP) install --quiet -e ".[dev,convert-tf]"
	$(PIP) install --quiet --no-deps "robustbench==1.1.1"
	touch $@

demo: setup
	$(VENV)/bin/robust-zoo demo

test: setup $(VENV)/.test-extras
	$(VENV)/bin/python -m pytest -n 2 -q tests

bench: setup
	$(VENV)/bin/python benchmarks/bench_activations.py

# the documentation site: mkdocs (Material theme, API pages from docstrings) into site/ (ignored by git);
# --strict turns every warning (a broken link, a page missing from the nav, a bad docstring) into a failure
$(VENV)/.docs-extras: $(VENV)/.installed
	$(PIP) install --quiet -e ".[docs]"
	touch $@

docs: $(VENV)/.docs-extras
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
