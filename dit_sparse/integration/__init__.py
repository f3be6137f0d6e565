"""The path from a diffusers pipeline call down to :func:`dit_sparse.block_sparse_attention`.

``specs`` knows each supported model (its self-attention modules and how to read the token grid),
``bridge`` routes those modules' attention calls to dit-sparse (a diffusers dispatcher backend, or a
scoped ``scaled_dot_product_attention`` override for CogVideoX), ``hooks`` supply the step, context and
layer index, ``state`` decides each call (dense or which mask) and keeps the statistics, and ``apply``
is the public entry point.
"""
