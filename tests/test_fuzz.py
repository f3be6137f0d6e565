"""Fuzzing the entry points: every input is either accepted (and then valid) or refused with a ValueError whose
message names what was wrong; never a traceback from deep inside torch, never silent acceptance of nonsense.

Each test records how many inputs it tried (``fuzz_inputs``); the terminal summary adds them up.
"""

from __future__ import annotations

import json
import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dit_sparse as ds
from dit_sparse.cli.main import main
from dit_sparse.config import METHOD_NAMES, METHOD_PARAMS

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

# Values of every kind a caller might pass by mistake.
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(-3, 300), max_size=4),
    st.tuples(st.integers(-3, 300), st.integers(-3, 300)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
SMALL_INT = st.one_of(st.integers(-2, 40), st.sampled_from([0, 1, 2**31, 2**63]))


def fuzz(record_property, strategy, check, examples: int = 150) -> None:
    """Run ``check`` on ``examples`` inputs drawn from ``strategy`` and record how many ran."""
    tried = [0]

    @settings(FUZZ, max_examples=examples)
    @given(strategy)
    def run(value) -> None:
        tried[0] += 1
        check(value)

    run()
    record_property("fuzz_inputs", tried[0])
    assert tried[0] > 0


def refused_clearly(error: ValueError, *names: str) -> None:
    """The message is one readable line that names one of ``names`` (the input at fault)."""
    message = str(error)
    assert message and "\n" not in message.strip(), message
    assert any(name in message for name in names), f"{message!r} names none of {names}"


# -- VideoLayout -------------------------------------------------------------------------------------------
LAYOUT_FIELDS = ("frames", "height", "width", "text_len", "text_position")


def test_video_layout(record_property):
    values = st.tuples(
        st.one_of(SMALL_INT, ODD),
        st.one_of(SMALL_INT, ODD),
        st.one_of(SMALL_INT, ODD),
        st.one_of(SMALL_INT, ODD),
        st.one_of(st.sampled_from(["none", "prefix", "suffix"]), ODD),
    )

    def check(args) -> None:
        try:
            layout = ds.VideoLayout(*args)
        except ValueError as error:
            refused_clearly(error, "VideoLayout")
            return
        frames, height, width, text_len, position = args
        assert all(type(x) is int and x > 0 for x in (frames, height, width))
        assert type(text_len) is int and text_len >= 0 and position in ("none", "prefix", "suffix")
        assert layout.num_tokens == frames * height * width + text_len

    fuzz(record_property, values, check)


# -- BlockSparseMask ---------------------------------------------------------------------------------------
TENSORS = st.builds(
    lambda shape, dtype, fill: torch.full(shape, fill).to(dtype) if fill is not None else torch.rand(shape) > 0.5,
    st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple),
    st.sampled_from([torch.bool, torch.bool, torch.int64, torch.float32, torch.uint8]),
    st.one_of(st.none(), st.integers(0, 1)),
)


def test_block_sparse_mask_from_dense(record_property):
    values = st.tuples(
        st.one_of(TENSORS, ODD),
        st.one_of(st.sampled_from([16, 64, 128, (64, 128)]), ODD),
        st.one_of(st.none(), st.tuples(st.integers(-5, 700), st.integers(-5, 700)), ODD),
        st.booleans(),
    )

    def check(args) -> None:
        blocks, block_size, seq_len, allow_empty = args
        try:
            mask = ds.BlockSparseMask.from_dense(blocks, block_size, seq_len, allow_empty_rows=allow_empty)
        except ValueError as error:
            refused_clearly(error, "blocks", "block", "seq_len", "rows")
            return
        assert mask.blocks.dtype == torch.bool and mask.blocks.dim() == 4
        bq, bk = mask.block_size
        nq, nk = mask.seq_len
        assert mask.blocks.shape[-2:] == (math.ceil(nq / bq), math.ceil(nk / bk))
        assert allow_empty or bool(mask.blocks.any(-1).all())
        assert 0.0 <= mask.density() <= 1.0

    fuzz(record_property, values, check)


def test_block_sparse_mask_from_indices(record_property):
    int_tensor = st.builds(
        lambda shape, low, high, dtype: torch.randint(low, max(high, low + 1), shape).to(dtype),
        st.lists(st.integers(0, 4), min_size=2, max_size=5).map(tuple),
        st.integers(-3, 3),
        st.integers(0, 9),
        st.sampled_from([torch.int64, torch.int32, torch.float32]),
    )
    values = st.tuples(
        int_tensor,
        int_tensor,
        st.one_of(st.sampled_from([16, 32]), ODD),
        st.one_of(st.tuples(st.integers(1, 200), st.integers(1, 200)), ODD),
    )

    def check(args) -> None:
        indices, counts, block_size, seq_len = args
        try:
            mask = ds.BlockSparseMask.from_indices(indices, counts, block_size, seq_len, allow_empty_rows=True)
        except ValueError as error:
            refused_clearly(error, "kv_indices", "kv_num_blocks", "block", "seq_len")
            return
        # every kept block is one the compressed form names, and nothing else
        valid = torch.arange(indices.shape[-1]) < counts[..., None]
        expected = torch.zeros_like(mask.blocks)
        for pos in valid.nonzero().tolist():
            expected[(*pos[:3], int(indices[tuple(pos)]))] = True
        assert torch.equal(mask.blocks, expected)

    fuzz(record_property, values, check, examples=120)


# -- SparseAttentionConfig -----------------------------------------------------------------------------------
COMMON_KEYS = ("dense_steps", "dense_layers", "block_size", "backend", "quant", "layer_overrides", "dense_heads")


def config_dicts():
    method = st.one_of(st.sampled_from(METHOD_NAMES), ODD)

    def build(method_name, picks, values, extra):
        known = METHOD_PARAMS.get(method_name, {}) if isinstance(method_name, str) else {}
        keys = list(COMMON_KEYS) + list(known) + ["typo_key"]
        data = {"method": method_name}
        for index, value in zip(picks, values, strict=False):
            data[keys[index % len(keys)]] = value
        if extra:
            data["params"] = {}
        return data

    value = st.one_of(ODD, st.sampled_from([0, 1, 16, 64, 128, 0.5, (3, 3, 3), (1, 2), "auto", "int8"]))
    return st.builds(
        build, method, st.lists(st.integers(0, 40), max_size=4), st.lists(value, max_size=4), st.booleans()
    )


def test_config_from_dict_and_json(record_property):
    def check(data) -> None:
        try:
            config = ds.SparseAttentionConfig.from_dict(data)
        except ValueError as error:
            refused_clearly(error, *data, "config", "method", "parameter")
            return
        # an accepted config survives JSON and reloads to the same thing
        again = ds.SparseAttentionConfig.from_dict(json.loads(json.dumps(config.to_dict())))
        assert again == config

    fuzz(record_property, config_dicts(), check)


# -- block_sparse_attention ----------------------------------------------------------------------------------
def attention_inputs():
    def build(q_shape, k_change, dtypes, mask_shape, backend):
        N = q_shape[2]
        k_shape = list(q_shape)
        if k_change is not None:
            k_shape[k_change[0]] = k_change[1]
        q = torch.randn(q_shape).to(dtypes[0])
        k = torch.randn(k_shape).to(dtypes[1])
        v = torch.randn(k_shape).to(dtypes[2])
        n_blocks_q = -(-N // 16)
        n_blocks_k = -(-k_shape[2] // 16) if k_shape[2] > 0 else 1
        mB, mH, n_extra = mask_shape
        blocks = torch.ones(mB, mH, max(1, n_blocks_q + n_extra), max(1, n_blocks_k), dtype=torch.bool)
        seq = (max(1, N), max(1, k_shape[2]))
        try:
            mask = ds.BlockSparseMask(blocks, 16, seq if n_extra == 0 else None)
        except ValueError:
            mask = "not a mask"
        return q, k, v, mask, backend

    return st.builds(
        build,
        st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 40), st.sampled_from([4, 8])),
        st.one_of(st.none(), st.tuples(st.integers(0, 3), st.integers(0, 9))),
        st.tuples(*[st.sampled_from([torch.float32, torch.float32, torch.float16, torch.int64])] * 3),
        st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(-1, 1)),
        st.sampled_from(["auto", "reference", "gather", "nonsense"]),
    )


def test_block_sparse_attention(record_property):
    def check(args) -> None:
        q, k, v, mask, backend = args
        try:
            out = ds.block_sparse_attention(q, k, v, mask, backend=backend)
        except ValueError as error:
            refused_clearly(error, "q", "k", "v", "mask", "backend", "dtype", "shape")
            return
        assert out.shape == q.shape and out.dtype == q.dtype and bool(torch.isfinite(out).all())
        dense = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
        if isinstance(mask, ds.BlockSparseMask) and mask.is_full():
            torch.testing.assert_close(out.float(), dense, atol=2e-3, rtol=2e-3)

    fuzz(record_property, attention_inputs(), check, examples=120)


# -- the CLI -------------------------------------------------------------------------------------------------
def cli_argv():
    option_values = {
        "--method": st.one_of(st.sampled_from(METHOD_NAMES), st.text(max_size=5)),
        "--param": st.one_of(
            st.sampled_from(["decay_factor=0.5", "fraction=2", "tau=nan", "window=[1,2]", "x", "=3", "tau="]),
            st.text(max_size=8),
        ),
        "--block-size": st.one_of(st.sampled_from(["16", "64", "128", "0", "-1", "12", "1e3"]), st.text(max_size=4)),
        "--dense-steps": st.sampled_from(["0", "2", "-1", "x", "999999999999999999999"]),
        "--steps": st.sampled_from(["1", "0", "-5", "2.5", ""]),
        "--frames": st.sampled_from(["1", "0", "17", "abc"]),
        "--backend": st.one_of(st.sampled_from(["auto", "gather", "reference", "flex"]), st.text(max_size=4)),
        "--quant": st.sampled_from(["int8", "int4", "int2"]),
        "--guidance": st.sampled_from(["5", "nan", "-1", "x"]),
    }
    pair = st.sampled_from(sorted(option_values)).flatmap(lambda o: st.tuples(st.just(o), option_values[o]))
    return st.lists(pair, max_size=4)


def test_cli_generate_arguments(record_property, tmp_path, capsys):
    """Every argument list ends in exit 2 with one line on stderr (argparse's usage, or our message) before any
    model loads: the model named is a missing folder."""

    def check(pairs) -> None:
        argv = ["generate", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]
        for option, value in pairs:
            argv += [option, value] if not value.startswith("-") else [f"{option}={value}"]
        try:
            code = main(argv)
        except SystemExit as exit_info:  # argparse
            code = exit_info.code
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert "Traceback" not in err and err.strip(), (argv, err)

    fuzz(record_property, cli_argv(), check, examples=100)
