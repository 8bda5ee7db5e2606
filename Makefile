# `make demo` and `make test` set up .venv on first use, so both work on a fresh clone.
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTHON_SYSTEM ?= python3

.PHONY: demo test install clean-venv

install: $(INSTALLED)

# torch is pinned in requirements.txt and installed in the same pip command,
# so no other package can pull a different (CUDA) build of it.
$(INSTALLED): requirements.txt pyproject.toml
	$(PYTHON_SYSTEM) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(INSTALLED)

demo: $(INSTALLED)
	PATH="$(BIN):$$PATH" dvc repro
	PATH="$(BIN):$$PATH" image-retrieval report

test: $(INSTALLED)
	PATH="$(BIN):$$PATH" pytest

clean-venv:
	rm -rf $(VENV)
