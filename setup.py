"""Installs jsla_fast and builds its C++ extension ``jsla_fast._C`` (torch.ops.jsla.*).

The extension needs torch at build time (pip install --no-build-isolation, as the Makefile does).
Environment:
  JSLA_FAST_NO_EXT=1      install the pure-Python package only (backend="cpp" then says so)
  JSLA_FAST_CPU_ARCH=...  value of -march for the CPU kernels (default: native, i.e. this machine)
  JSLA_FAST_NO_CUDA=1     leave the CUDA kernels out (they are built when torch has CUDA and nvcc is found)
  JSLA_FAST_CUDA_ARCHS    compute capabilities to build for, ";"-separated (default "80;90"; "90" alone
                          builds for the H100/H200 in half the time)
  CUDA_HOME               the CUDA toolkit (bin/nvcc and include/); it must have torch's CUDA major version
"""
import os
import re
import subprocess
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


_NO_CUDA_HINT = "or set JSLA_FAST_NO_CUDA=1 to build the CPU kernels only"


def cuda_build() -> str | None:
    """Why the CUDA kernels are left out of this build, or None when they go in: they need a
    CUDA build of torch and nvcc (CUDA_HOME). A toolkit that is found but cannot build them
    stops the build here, with what to do, rather than deep inside torch's extension builder."""
    if os.environ.get("JSLA_FAST_NO_CUDA"):
        return "JSLA_FAST_NO_CUDA is set"
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    if CUDA_HOME is None or not (Path(CUDA_HOME) / "bin" / "nvcc").exists():
        return "nvcc was not found (set CUDA_HOME to the CUDA toolkit)"
    check_toolkit(Path(CUDA_HOME), torch.version.cuda, torch.__version__)
    return None


def check_toolkit(home: Path, torch_cuda: str, torch_version: str) -> None:
    """The toolkit at ``home`` can build against this torch: it has the headers (torch takes
    CUDA_HOME from the nvcc on PATH when it is unset, and a wrapper script there has no include/
    beside it) and torch's CUDA major version (torch's builder refuses a major mismatch)."""
    if not (home / "include" / "cuda_runtime_api.h").exists():
        raise SystemExit(f"jsla_fast: CUDA_HOME={home} has bin/nvcc but no include/cuda_runtime_api.h (a wrapper "
                         "nvcc?): set CUDA_HOME to the CUDA toolkit directory, the one holding bin/nvcc and "
                         f"include/ (e.g. /usr/local/cuda), {_NO_CUDA_HINT}")
    try:
        out = subprocess.run([str(home / "bin" / "nvcc"), "--version"], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"jsla_fast: {home}/bin/nvcc --version failed ({e}): check the CUDA toolkit at "
                         f"CUDA_HOME={home}, {_NO_CUDA_HINT}") from None
    found = re.search(r"release (\d+)\.(\d+)", out)
    if found is None:
        raise SystemExit(f"jsla_fast: cannot read the CUDA version from {home}/bin/nvcc --version:\n{out}")
    if found.group(1) != torch_cuda.split(".")[0]:
        raise SystemExit(f"jsla_fast: nvcc at {home} is CUDA {found.group(1)}.{found.group(2)}, torch "
                         f"{torch_version} was built with CUDA {torch_cuda}, and torch builds no extension across "
                         f"CUDA major versions: set CUDA_HOME to a CUDA {torch_cuda.split('.')[0]}.x toolkit, "
                         f"install the torch built for CUDA {found.group(1)}, {_NO_CUDA_HINT}")


def cuda_archs() -> list[str]:
    """JSLA_FAST_CUDA_ARCHS as compute capabilities ("90", "90a"), checked before nvcc sees them."""
    value = os.environ.get("JSLA_FAST_CUDA_ARCHS", "80;90")
    archs = [a.strip() for a in value.split(";") if a.strip()]
    bad = [a for a in archs if not re.fullmatch(r"\d{2,3}a?", a)]
    if not archs or bad:
        raise SystemExit(f"jsla_fast: JSLA_FAST_CUDA_ARCHS={value!r}: give compute capabilities without dots, "
                         "\";\"-separated, e.g. \"90\" (H100/H200) or \"80;90\" (A100 and H100)")
    return archs


def extensions():
    if os.environ.get("JSLA_FAST_NO_EXT"):
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print("jsla_fast: torch is not importable at build time; building without the C++ extension "
              "(install torch first, then pip install --no-build-isolation -e .)")
        return [], {}
    no_cuda = cuda_build()
    sources = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("csrc/cpu/*.cpp"), *ROOT.glob("csrc/torch/*.cpp")]
                     if no_cuda is None or p.name != "cuda.cpp")
    arch = os.environ.get("JSLA_FAST_CPU_ARCH", "native")
    # -fopenmp: at::parallel_for is inlined from ATen/ParallelOpenMP.h; without it the ops run on one thread
    cxx = ["-O3", f"-march={arch}", "-fopenmp", "-Wall"]
    kwargs = dict(include_dirs=[str(ROOT / "csrc")], extra_link_args=["-fopenmp"])
    if no_cuda is None:
        sources += sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("csrc/cuda/*.cu"))
        # sm_80 (A100) and sm_90 (H100/H200) machine code by default; naming -gencode here keeps
        # torch from adding its own TORCH_CUDA_ARCH_LIST targets
        nvcc = ["-O3", *[f"-gencode=arch=compute_{a},code=sm_{a}" for a in cuda_archs()]]
        ext = CUDAExtension("jsla_fast._C", sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)
    else:
        print(f"jsla_fast: building the CPU kernels only ({no_cuda})")
        ext = CppExtension("jsla_fast._C", sources, extra_compile_args=cxx, **kwargs)
    return [ext], {"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = extensions()

setup(
    name="jsla_fast",
    version="0.1.0",
    description="Joint Spatial and Layer Attention (BMVC 2019) for camera relocalization, with fused kernels",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # kernels/ (Triton) sits at the top of the checkout beside csrc/ and installs as jsla_fast.kernels
    packages=[*find_packages(include=["jsla_fast", "jsla_fast.*"]), "jsla_fast.kernels"],
    package_dir={"jsla_fast.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=["torch>=2.4", "numpy>=1.23", "pyyaml>=6", "pillow>=9", "tqdm>=4.60", "matplotlib>=3.6"],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout>=2.1", "tensorboard>=2.12", "onnx>=1.16", "onnxscript>=0.2",
                 "onnxruntime>=1.18", "opencv-python-headless>=4.5", "rosbags>=0.9.20", "triton>=3.2",
                 "openvino>=2024.0"],
        # pytest-timeout: tools/gpu_check.sh's time limit per gpu test; rosbags: writes the bag the
        # ROS test plays; openvino: the bench's rows and the Localizer's openvino backbone executor
        "ros": ["opencv-python-headless>=4.5"],  # decoding camera messages (Bayer, compressed)
        "tensorboard": ["tensorboard>=2.12"],
        "onnx": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"],
        "openvino": ["openvino>=2024.0", "onnx>=1.16", "onnxscript>=0.2"],  # + export, for the bench rows
    },
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Image Recognition"],
)
