"""What several test files share (import as ``from helpers.ops import ...``; tests never import
conftest, which holds only pytest's fixtures and hooks):

    ops.py      the fused ops' inputs, NaN-poisoned buffers and allocations, the layer shapes
    compare.py  the comparison with the float64 specification: derived bounds, mutations
    backends.py which fused backend a test may use; the one skip for a missing triton
    models.py   a diverse layer selector, trained-like BatchNorm, a forced layer choice
    data.py     tiny datasets written to disk in every supported layout
"""
