from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent

setup(
    name="jsla_fast",
    version="0.1.0",
    description="Joint Spatial and Layer Attention (BMVC 2019) for camera relocalization, with fused kernels",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["jsla_fast", "jsla_fast.*"]),
    install_requires=["torch>=2.4", "numpy>=1.23", "pyyaml>=6", "pillow>=9", "tqdm>=4.60", "matplotlib>=3.6"],
    extras_require={"test": ["pytest>=7", "tensorboard>=2.12"], "tensorboard": ["tensorboard>=2.12"]},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Image Recognition"],
)
