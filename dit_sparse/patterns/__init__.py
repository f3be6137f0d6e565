"""Pure mask builders: ``(layout, **params) -> BlockSparseMask``, one family per module.

Each family has a token-level definition (a function of query and key token indices) and a block builder
that is its exact reduction: a block is kept iff at least one token pair in it is kept by the definition.
Text rows and text columns are always kept.
"""

from .radial import radial, radial_token_mask

__all__ = ["radial", "radial_token_mask"]
