# The two entry points of the README. Both create .venv when missing and install what they need;
# running them again installs nothing new (the stamp file changes only with setup.py/pyproject.toml).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.jsla_fast-installed
# torch 2.13.0 is the version CI pins; override e.g. TORCH=torch==2.5.1 for another build.
TORCH  ?= torch==2.13.0

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): setup.py pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet setuptools wheel
	$(BIN)/pip install --quiet --no-build-isolation -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m jsla_fast.demo

# pytest exits 5 when it collects nothing: that means the suite went missing, so fail loudly.
test: $(STAMP)
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (is tests/ missing?)" >&2; exit 1; fi; \
	exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info demo_out
