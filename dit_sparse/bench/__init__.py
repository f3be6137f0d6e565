"""Benchmarks as library code, so that scripts in ``benchmarks/`` and the ``dit-sparse`` CLI share them."""
