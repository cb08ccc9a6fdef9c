"""tools/gpu_check.sh and the bench's GPU options, checked on the CPU: the script must stop with a
clear message on bad arguments and on a machine without a GPU (what CI and a developer's laptop
are) before it builds anything, and the bench's torch.compile mode and GPU ceilings must be right
before a GPU is lent."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jsla_fast import bench
from jsla_fast.ops.cost import GPU_CEILINGS, attention_cost, convlstm_cost

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_check.sh"


def run_script(*args, python: str | None = None, cwd: Path = ROOT, **env) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": python or sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_script_parses():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("args, message", [
    ((), "missing OUT_DIR"),
    (("--fast",), "unknown option '--fast'"),
    (("{out}", "benchmark"), "unknown part 'benchmark': choose tests, bench or all"),
    (("{out}", "tests", "bench"), "too many arguments"),
])
def test_bad_arguments_stop_with_usage_before_anything_is_written(tmp_path, args, message):
    out = tmp_path / "out"
    result = run_script(*(a.format(out=out) for a in args))
    assert result.returncode == 2, result.stderr
    assert "usage: tools/gpu_check.sh OUT_DIR [tests|bench|all]" in result.stderr
    assert message in result.stderr
    assert not out.exists()  # arguments are checked before OUT_DIR is made


@pytest.mark.parametrize("var", ["GPU_CHECK_DEADLINE_S", "GPU_CHECK_TEST_TIMEOUT_S", "GPU_CHECK_WORKERS", "MAX_JOBS"])
def test_a_setting_that_is_not_a_number_is_named(tmp_path, var):
    result = run_script(tmp_path / "out", "tests", **{var: "5m"})
    assert result.returncode == 2, result.stderr
    assert f"{var}=5m: give a whole number" in result.stderr
    assert not (tmp_path / "out").exists()


def test_help_is_not_an_error():
    result = run_script("--help")
    assert result.returncode == 0 and "usage: tools/gpu_check.sh" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script goes on to build: there, run it")
def test_without_a_gpu_it_records_the_environment_and_stops(tmp_path):
    out = tmp_path / "nested" / "out"  # made with its parents
    result = run_script(out, "tests", cwd=tmp_path)  # from anywhere: it finds the checkout itself
    assert result.returncode == 3, result.stderr
    assert f"no CUDA GPU is visible to torch {torch.__version__}: run this on the lent GPU machine" in result.stderr
    env = (out / "env.txt").read_text()
    assert f"torch {torch.__version__}, torch.version.cuda {torch.version.cuda}, cuda available: False" in env
    assert "CUDA toolkit candidates" in env and "CUDA_HOME used:" in env
    assert sorted(p.name for p in out.iterdir()) == ["env.txt"]  # nothing built, nothing run
    assert "FAILED: no CUDA GPU" in result.stdout  # the summary table, printed last


def test_a_python_without_torch_is_named(tmp_path):
    fake = tmp_path / "python-without-torch"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    result = run_script(tmp_path / "out", "bench", python=str(fake))
    assert result.returncode == 3, result.stderr
    assert f"{fake} cannot import torch: run this with the python that holds the machine's CUDA torch" in result.stderr
    assert (tmp_path / "out" / "env.txt").exists()


def test_bench_rejects_an_unknown_compile_mode_before_measuring(caplog):
    with caplog.at_level(logging.ERROR, logger="jsla_fast.bench"):
        assert bench.main(["--ops", "--compile-mode", "max_autotune"]) == 2
    assert "--compile-mode 'max_autotune' is not a mode of torch" in caplog.text
    assert "max-autotune" in caplog.text and "default" in caplog.text  # the choices, spelled right


def test_bench_compile_modes_are_torchs():
    assert {"default", "max-autotune"} <= set(bench.compile_modes())
    for mode in bench.compile_modes():  # torch.compile itself accepts each (it checks the mode up front)
        assert bench.check_compile_mode(mode) == mode
        torch.compile(torch.nn.Identity(), mode=mode)
    with pytest.raises(RuntimeError, match="max_autotune"):
        torch.compile(torch.nn.Identity(), mode="max_autotune")  # what the check spares a bench run


def test_bench_floors_on_a_listed_gpu_come_from_the_table():
    peaks = bench.gpu_peaks("NVIDIA H200", gflops=700e3, gbps=4100.0)
    assert peaks["peak_gflops"] == GPU_CEILINGS["NVIDIA H200"].bf16_tflops * 1e3 == 788e3
    assert peaks["peak_gbps"] == GPU_CEILINGS["NVIDIA H200"].copy_tbps * 1e3 == 4300.0
    assert (peaks["measured_bf16_gflops"], peaks["measured_copy_gbps"]) == (700e3, 4100.0)  # recorded beside
    assert "GPU_CEILINGS['NVIDIA H200']" in peaks["peaks_how"]


def test_bench_floors_on_an_unlisted_gpu_use_the_runs_readings(caplog):
    with caplog.at_level(logging.WARNING, logger="jsla_fast.bench"):
        peaks = bench.gpu_peaks("NVIDIA A100-SXM4-80GB", gflops=280e3, gbps=1800.0)
    assert (peaks["peak_gflops"], peaks["peak_gbps"]) == (280e3, 1800.0)
    assert "not in jsla_fast.ops.cost.GPU_CEILINGS" in peaks["peaks_how"]
    assert "NVIDIA A100-SXM4-80GB is not in jsla_fast.ops.cost.GPU_CEILINGS" in caplog.text



# The floors table of docs/PERFORMANCE.md ("GPU backends"): its rows, and the work each one counts
DOC_FLOOR_ROWS = {
    "attention, B=40, 832x14x14, k=5": attention_cost(40, 832, 14, 14, 5, itemsize=2),
    "ConvLSTM step, B=1 (D=128, hid=96, k=1,3,5,7, 14x14)": convlstm_cost(1, 128, 96, 14, 14, (1, 3, 5, 7), 2),
    "ConvLSTM step, B=40": convlstm_cost(40, 128, 96, 14, 14, (1, 3, 5, 7), 2),
}


def test_the_documented_gpu_floors_follow_from_the_table():
    """Each printed number equals the one computed from jsla_fast.ops.cost to its last printed
    digit (half a unit of it either way), so a changed ceiling or cost shows up here."""
    lines = (ROOT / "docs" / "PERFORMANCE.md").read_text(encoding="utf-8").splitlines()

    def close(text: str, value: float) -> bool:
        decimals = len(text.partition(".")[2])
        return abs(float(text) - value) <= 0.5 * 10 ** -decimals + 1e-12

    for label, (flops, nbytes) in DOC_FLOOR_ROWS.items():
        row = [line for line in lines if line.startswith(f"| {label} |")]
        assert len(row) == 1, f"docs/PERFORMANCE.md has no single floors row {label!r}"
        cells = [c.strip() for c in row[0].split("|")[1:-1]]
        assert close(re.match(r"[\d.]+", cells[1])[0], flops / 1e9), cells[1]
        assert close(re.match(r"[\d.]+", cells[2])[0], nbytes / 1e6), cells[2]
        for cell, gpu in zip(cells[3:5], ("NVIDIA H100 80GB HBM3", "NVIDIA H200")):
            compute, memory = re.fullmatch(r"([\d.]+) / ([\d.]+) us", cell).groups()
            ceilings = GPU_CEILINGS[gpu]
            assert close(compute, flops / (ceilings.bf16_tflops * 1e6)), (label, gpu, cell)
            assert close(memory, nbytes / (ceilings.copy_tbps * 1e6)), (label, gpu, cell)
