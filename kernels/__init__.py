"""Triton kernels of the two fused ops (docs/DESIGN.md, "The fused ops"), installed as ``jsla_fast.kernels``.

``attention.py`` and ``convlstm.py`` hold the ``@triton.jit`` kernels and their launchers; the
ops' registration (``torch.library``, autograd) is :mod:`jsla_fast.ops.triton`. Every kernel also
runs under ``TRITON_INTERPRET=1`` on CPU (tiny shapes; how CI checks them).
"""
