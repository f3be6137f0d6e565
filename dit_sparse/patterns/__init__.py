"""Pure mask builders: ``(layout, **params) -> BlockSparseMask``, one family per module.

Each family has a token-level definition (``*_token_mask``, an ``(N, N)`` bool for tests and small layouts)
and a block builder that is its exact reduction: a block is kept iff at least one token pair in it is kept.
Text rows and text columns are always kept, so every row keeps at least one block.
"""

from .diagonal import diagonal, diagonal_token_mask
from .multi_diagonal import multi_diagonal, multi_diagonal_token_mask
from .radial import radial, radial_token_density, radial_token_mask
from .sliding_tile import sliding_tile, sliding_tile_token_mask
from .vertical_stripe import vertical_stripe, vertical_stripe_token_mask

__all__ = [
    "diagonal",
    "diagonal_token_mask",
    "multi_diagonal",
    "multi_diagonal_token_mask",
    "radial",
    "radial_token_density",
    "radial_token_mask",
    "sliding_tile",
    "sliding_tile_token_mask",
    "vertical_stripe",
    "vertical_stripe_token_mask",
]
