# The two entry points of the README. Both create .venv when missing and install what they need;
# running them again installs nothing new (the stamps change only with setup.py/pyproject.toml,
# and the C++ extension is rebuilt only when csrc/ changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.jsla_fast-installed
EXT    := $(VENV)/.jsla_fast-extension
CSRC   := $(wildcard csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu)
# nvcc compiles the CUDA kernels (a check on machines without a GPU): from PATH or the usual place
NVCC   ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
# torch 2.13.0 is the version CI pins; override e.g. TORCH=torch==2.5.1 for another build.
TORCH  ?= torch==2.13.0

.PHONY: demo test install ros ctest bench clean

install: $(EXT)

$(STAMP): setup.py pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet setuptools wheel
	$(BIN)/pip install --quiet --no-build-isolation -e ".[test]"
	@touch $(STAMP)

# torch.ops.jsla.* (csrc/torch + csrc/cpu): the editable install builds it in place; rebuild
# only when a C++ source is newer than the library (an edit after installing).
$(EXT): $(STAMP) $(CSRC)
	@so=$$(ls jsla_fast/_C*.so 2>/dev/null | head -1); \
	if [ -z "$$so" ] || [ -n "$$(find csrc -newer "$$so" -type f)" ]; then \
	  $(BIN)/python setup.py --quiet build_ext --inplace > build-ext.log 2>&1 || { cat build-ext.log; exit 1; }; fi
	$(BIN)/python -c "from jsla_fast.ops.dispatch import why_unavailable as w; r = w('cpp'); assert r is None, r"
	@touch $(EXT)

# ROS 1 from Debian's packages (only those missing) + the venv's path to rospy; see ros/install.sh.
ros: $(STAMP)
	@sh ros/install.sh $(BIN)/python

demo: $(EXT) ros
	$(BIN)/python -m jsla_fast.demo

# The torch-free kernel library and its C++ unit tests (CMake + ctest); with nvcc, the CUDA kernels
# and their binding are compiled for sm_80 and sm_90 too (compile only: no GPU here).
ctest: $(STAMP)
	@cmake -S . -B build/cmake -DCMAKE_BUILD_TYPE=Release $(if $(NVCC),-DCMAKE_CUDA_COMPILER=$(NVCC) \
	  -DJSLA_TORCH_INCLUDE="$$($(BIN)/python -c 'from torch.utils.cpp_extension import include_paths as p; print(";".join(p()))')") \
	  > build-cmake.log 2>&1 || (cat build-cmake.log; exit 1)
	@cmake --build build/cmake -j2 >> build-cmake.log 2>&1 || (cat build-cmake.log; exit 1)
	@grep -o "jsla: .*" build-cmake.log | head -1
	ctest --test-dir build/cmake --output-on-failure

# pytest exits 5 when it collects nothing: that means the suite went missing, so fail loudly.
test: $(EXT) ros ctest
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (is tests/ missing?)" >&2; exit 1; fi; \
	exit $$rc

bench: $(EXT)
	$(BIN)/python -m jsla_fast.bench --json bench.json

clean:
	rm -rf $(VENV) build build-cmake.log build-ext.log *.egg-info demo_out jsla_fast/_C*.so
