# `make demo` and `make test` set up .venv on first use, so both work on a fresh clone.
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTHON_SYSTEM ?= python3

.PHONY: demo test bench install clean-venv

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

# Full-scale benchmarks, not part of `make test`. Each script writes its
# Markdown tables to bench/results/SCRIPT.md (git-ignored) and its progress
# log to the terminal. losses_demo.py (needs `make demo`, about 20 minutes of
# training) and gpu_train_throughput.py (needs a GPU) are left out.
# evaluate_scale.py needs about 15 GiB of free memory for its full-matrix
# comparison.
BENCH_RESULTS := bench/results
BENCH_SCRIPTS := throughput prepare_throughput embed_throughput evaluate_scale index_scale

bench: $(INSTALLED)
	mkdir -p $(BENCH_RESULTS)
	for script in $(BENCH_SCRIPTS); do \
		echo "Running bench/$$script.py > $(BENCH_RESULTS)/$$script.md"; \
		PATH="$(BIN):$$PATH" python bench/$$script.py > $(BENCH_RESULTS)/$$script.md.partial || exit 1; \
		mv $(BENCH_RESULTS)/$$script.md.partial $(BENCH_RESULTS)/$$script.md; \
	done

clean-venv:
	rm -rf $(VENV)
