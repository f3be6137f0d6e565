"""Calibration statistics leave padded tokens out, as the model's masked attention does (HunyuanVideo pads
its text; HunyuanVideo 1.5 masks padded queries too)."""

from __future__ import annotations

import pytest
import torch

from dit_sparse.calibration.search import HeadStatistics
from dit_sparse.layout import VideoLayout

LAYOUT = VideoLayout(3, 5, 4, text_len=9, text_position="suffix")  # 60 video tokens, then 9 text: N = 69
N = LAYOUT.num_tokens


def _qkv(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 2, N, 8, generator=g) for _ in range(3))


def _scores(stats: HeadStatistics) -> list[float]:
    """Every candidate's measured recall or relative L2 error, per head."""
    return [m.recall if m.rel_l2 is None else m.rel_l2 for head in stats.measurements() for m in head]


def _with_new_padding(x: torch.Tensor, start: int, seed: int) -> torch.Tensor:
    """``x`` with sample 1's tokens from ``start`` on replaced by other random values."""
    x = x.clone()
    x[1, :, start:] = torch.randn(x[1, :, start:].shape, generator=torch.Generator().manual_seed(seed)) * 5
    return x


@pytest.mark.parametrize("metric", ["recall", "rel_l2"])
@pytest.mark.parametrize("joint", [False, True])
def test_padded_tokens_do_not_change_the_statistics(metric, joint):
    """Sample 1 pads its last 4 text tokens (as keys; with ``joint`` as queries too): whatever they hold, the
    measurements are the same, and without the lengths they are not."""
    q, k, v = _qkv()
    lengths = {"key_lengths": [N, N - 4]} | ({"query_lengths": [N, N - 4]} if joint else {})
    results = []
    for seed in (1, 2):
        q2 = _with_new_padding(q, N - 4, seed) if joint else q
        k2, v2 = _with_new_padding(k, N - 4, seed), _with_new_padding(v, N - 4, seed)
        stats = HeadStatistics(LAYOUT, 2, metric=metric, block_size=16, backend="torch")
        stats.add(q2, k2, v2, **lengths)
        unmasked = HeadStatistics(LAYOUT, 2, metric=metric, block_size=16, backend="torch")
        unmasked.add(q2, k2, v2)
        results.append((_scores(stats), _scores(unmasked)))
        assert stats.rows == 2 * N - (4 if joint else 0)
    (masked_a, unmasked_a), (masked_b, unmasked_b) = results
    assert masked_a == pytest.approx(masked_b, rel=1e-5, abs=1e-7)
    assert unmasked_a != pytest.approx(unmasked_b, rel=1e-5, abs=1e-7)


def test_full_lengths_are_the_unpadded_statistics_and_bad_lengths_are_refused():
    q, k, v = _qkv()
    plain = HeadStatistics(LAYOUT, 2, block_size=16, backend="torch")
    plain.add(q, k, v)
    declared = HeadStatistics(LAYOUT, 2, block_size=16, backend="torch")
    declared.add(q, k, v, key_lengths=[N, N], query_lengths=[N, N])
    assert _scores(declared) == pytest.approx(_scores(plain))
    with pytest.raises(ValueError, match="padding lengths"):
        declared.add(q, k, v, key_lengths=[N, 0])


@pytest.mark.parametrize("joint", [False, True])
def test_paro_order_statistics_leave_padding_out(joint):
    """PAROAttention's per-order masses and quantization errors: padded tokens change nothing once the lengths are
    given (they do without them), and full lengths are the unpadded statistics."""
    from dit_sparse.methods.paro import OrderStatistics

    q, k, _ = _qkv()
    lengths = {"key_lengths": [N, N - 4]} | ({"query_lengths": [N, N - 4]} if joint else {})

    def statistics(q, k, **given):
        stats = OrderStatistics(LAYOUT, 16)
        stats.update(q, k, **given)
        return torch.cat([torch.cat([stats.mass[o].flatten(), stats.quant_error[o]]) for o in sorted(stats.mass)])

    runs = []
    for seed in (1, 2):
        q2 = _with_new_padding(q, N - 4, seed) if joint else q
        k2 = _with_new_padding(k, N - 4, seed)
        runs.append((statistics(q2, k2, **lengths), statistics(q2, k2)))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(runs[0][1], runs[1][1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(statistics(q, k, key_lengths=[N, N], query_lengths=[N, N]), statistics(q, k))
    with pytest.raises(ValueError, match="padding lengths"):
        statistics(q, k, key_lengths=[N, 0])
