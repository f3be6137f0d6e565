"""Cross-attention whose keys end in a run of identical rows: the run merged into one key, exactly.

Wan's pipelines (Wan 2.1/2.2, VACE, SkyReels-V2, Animate) pad every prompt's T5 states with zero rows to
``max_sequence_length`` (512 by default); the text projection, the key and value projections and Wan's key
norm map every zero row to the same key and the same value. Softmax over ``n`` identical keys gives each the
weight ``exp(s) / Z`` and together ``n exp(s) / Z = exp(s + log n) / Z``: one copy of the key with ``log n``
added to its score, and the same value, gives the same output. A 10-token prompt then attends to 11 keys
instead of 512.

Only rows that are bit-identical (in key and value, for every sample of the call) are merged, so the result
is dense cross-attention up to the rounding of a different summation order. The merged call runs torch's
SDPA in fp32 with ``log n`` as an additive mask: in bf16 ``log n`` itself would be off by up to 0.8%
(``log 502`` rounds to 6.21875), which is why on CUDA only fp32 calls are merged (there, in half precision,
the upcast of q would cost more than cross-attention does at the sizes where it matters), and on a CPU
half-precision calls are merged in fp32 and cast back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def repeated_tail_start(key: torch.Tensor, value: torch.Tensor) -> int | None:
    """Where the trailing run of rows equal to the last row starts, in ``key`` and ``value`` ``(B, L, H, D)``.

    The run is the one every sample has (the latest start over the batch; each sample's own last row is its
    run's key). Returns ``None`` when the run is shorter than half the keys (merging would save little).
    """
    if key.dim() != 4 or value.dim() != 4 or key.shape[:3] != value.shape[:3] or key.shape[1] < 4:
        return None
    length = key.shape[1]
    same = (key == key[:, -1:]).flatten(2).all(-1) & (value == value[:, -1:]).flatten(2).all(-1)  # (B, L)
    positions = torch.arange(length, device=key.device)
    last_distinct = torch.where(same, -1, positions).amax(-1)  # (B,): -1 when every row repeats
    start = int(last_distinct.max()) + 1
    return start if length - start >= max(2, length // 2) else None


def merged_cross_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, start: int, scale: float | None
) -> torch.Tensor:
    """Attention of ``query`` ``(B, N, H, D)`` over ``key`` / ``value`` ``(B, L, H, D)`` whose rows ``start..L-1``
    repeat row ``L - 1``: the run as one key with ``log(L - start)`` added to its score. Returns ``(B, N, H, D)``
    in the query's dtype, computed in fp32."""
    count = key.shape[1] - start
    kept = start + 1
    # contiguous q: torch's fused CPU kernel runs ~2x faster on it than on diffusers' (B, N, H, D) strides
    q = query.transpose(1, 2).float().contiguous()
    k = key[:, :kept].transpose(1, 2).float()
    v = value[:, :kept].transpose(1, 2).float()
    bias = torch.zeros(1, 1, 1, kept, dtype=torch.float32, device=query.device)
    bias[..., -1] = math.log(count)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    return out.transpose(1, 2).to(query.dtype)


def can_merge(query: torch.Tensor, attn_mask: torch.Tensor | None, dropout_p: float, is_causal: bool) -> bool:
    """Whether a cross-attention call may take the merged path: no mask, inference, fp32 or a CPU."""
    return (
        attn_mask is None
        and not dropout_p
        and not is_causal
        and (query.device.type == "cpu" or query.dtype == torch.float32)
    )
