# The README's two commands: `make demo` and `make test`. Both build the virtual environment first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.genlab-installed
RUN ?= runs/tutorial-gan-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test env clean emoji docs

env: $(STAMP)

# torch==2.13.0 first: the CPU build lies on this machine's disk; with it installed, the package's
# looser `torch>=2.3` is already met and pip fetches no multi-GB CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/genlab train --config configs/tutorial-gan-mnist.yaml --out $(RUN)

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# the documentation site (MkDocs, Material theme) into site/, strict: a broken link or reference fails
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

# the colour dataset `emoji`: the npm package emoji-datasource-twitter, into genlab's cache
EMOJI_DIR ?= $(or $(GENLAB_CACHE),$(HOME)/.cache/genlab)/datasets/emoji
emoji:
	mkdir -p $(EMOJI_DIR) && cd $(EMOJI_DIR) && npm pack emoji-datasource-twitter@16.0.0

clean:
	rm -rf $(VENV) runs
