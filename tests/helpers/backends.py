"""Which fused backend a test may use, decided in one place: a backend the test command installs
and builds must be there (its absence fails the test, with the reason), except the optional
Triton package, whose absence skips every test that needs it with a reason that says why and
how to install it."""
from __future__ import annotations

import importlib.util

import pytest

from jsla_fast.ops import BACKENDS, Backend, why_unavailable

TRITON_MISSING = ("needs the `triton` package, which is not installed: `pip install triton` (the project's `test` "
                  "extra installs it; CUDA builds of torch bring it)")


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def require_triton() -> None:
    """Skip the calling test, or at module level the whole file, when triton is not installed."""
    if not triton_installed():
        pytest.skip(TRITON_MISSING, allow_module_level=True)


def fused_backend(name: str, device: str = "cpu") -> Backend:
    """The backend ``name`` on ``device``: skipped for a missing triton, failed for anything else
    that keeps it from running (an extension that was not built, a missing interpreter setting)."""
    if name == "triton":
        require_triton()
    reason = why_unavailable(name, device)
    assert reason is None, reason
    return BACKENDS[name]
