"""What several test files share (import as ``from helpers.ops import ...``; tests never import
conftest, which holds only pytest's fixtures and hooks):

    ops.py      the fused ops' inputs, NaN-poisoned buffers, float64 references, the layer shapes
    models.py   a diverse layer selector, trained-like BatchNorm, a forced layer choice
    data.py     tiny datasets written to disk in every supported layout
"""
