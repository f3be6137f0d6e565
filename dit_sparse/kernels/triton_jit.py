"""Triton sources of our GPU kernels (imported on first use, never by ``import dit_sparse``).

- ``_block_sparse_fwd_kernel``: block-sparse flash attention, launched, autotuned and documented by
  :mod:`dit_sparse.kernels.triton_block_sparse`.
- ``_block_mass_kernel``: each q block's attention mass on each kv block, given the rows' LSE, for the
  dynamic methods' searches; launched by :func:`dit_sparse.scoring.block_attention_mass`.
- ``_pyramid_fwd_kernel``: pyramid attention over full, pooled and dropped kv blocks (a
  :class:`~dit_sparse.LevelMask`), launched and documented by :mod:`dit_sparse.kernels.pyramid`.

All walk their kv tokens in one flattened, software-pipelined loop over ``BLOCK_N`` tiles (the pyramid
kernel one per level), so shared memory grows with ``BLOCK_N`` and ``num_stages``, not with the mask block; mask
only the sequence's partial last kv block, take the head dim as a constant and compute base offsets in int64.
"""

import triton
import triton.language as tl


@triton.jit
def _online_softmax_step(q, k, v, acc, l_i, m_i, qk_scale, col_ok, MASKED: tl.constexpr, IEEE_DOT: tl.constexpr,
                         QUANT: tl.constexpr):  # fmt: skip
    """One BLOCK_N tile of the online softmax; scores in log2 units, the scale folded into one FMA."""
    if QUANT:
        # int8 x int8 summed in int32 is exact; qk_scale holds both block scales and the softmax scale.
        qk = tl.dot(q, k, out_dtype=tl.int32).to(tl.float32)
    elif IEEE_DOT:
        qk = tl.dot(q, k, input_precision="ieee")
    else:
        qk = tl.dot(q, k)
    if MASKED:
        # Only a tile of the sequence's partial last kv block; it has at least one valid column.
        qk = tl.where(col_ok[None, :], qk * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp2(qk - m_new[:, None])
    else:
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.exp2(qk * qk_scale - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    if IEEE_DOT:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
    else:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, l_i, m_new


@triton.jit
def _block_sparse_fwd_kernel(
    Q, K, V, Out, Lse, KV_NUM, KV_IDX, Q_SCALE, K_SCALE,
    qk_scale_log2,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_numb, stride_numh, stride_numm,
    stride_idxb, stride_idxh, stride_idxm,
    stride_qsb, stride_qsh, stride_ksb, stride_ksh,
    H, N_Q, N_K,
    HEAD_DIM: tl.constexpr, MASK_BQ: tl.constexpr, MASK_BK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_N: tl.constexpr,
    OUTPUT_LSE: tl.constexpr, IEEE_DOT: tl.constexpr, QUANT: tl.constexpr,
):  # fmt: skip
    TILES: tl.constexpr = MASK_BK // BLOCK_N
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    # int64 bases: B x H x N x D may pass 2^31 elements; offsets inside one tile stay int32.
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)

    # -- this program's query rows and its row of the block table
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < N_Q
    d_ok = offs_d < HEAD_DIM
    mask_row = (pid_m * BLOCK_M) // MASK_BQ
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd
    if BLOCK_D == HEAD_DIM:
        q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
    else:
        q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    n_kept = tl.load(KV_NUM + b * stride_numb + h * stride_numh + mask_row * stride_numm)
    idx_row = KV_IDX + b * stride_idxb + h * stride_idxh + mask_row * stride_idxm
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    # Tile offsets relative to a tile's first token: loop-invariant, so the loop only bumps two pointers.
    k_tile = offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd  # (BLOCK_D, BLOCK_N)
    v_tile = offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd  # (BLOCK_N, BLOCK_D)
    k_dmask = d_ok[:, None]
    v_dmask = d_ok[None, :]
    qk_scale = qk_scale_log2
    if QUANT:
        # BLOCK_M divides MASK_BQ, so all of this program's rows share one q block and one scale.
        qk_scale = qk_scale * tl.load(Q_SCALE + b * stride_qsb + h * stride_qsh + mask_row)
        k_scale_row = K_SCALE + b * stride_ksb + h * stride_ksh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # Kept ids ascend, so only the last kept block can be the sequence's partial last block: the main loop
    # runs the full blocks unmasked, the tail below runs that one block's tiles with a column mask.
    n_full = n_kept
    if not EVEN_N:
        last = tl.load(idx_row + tl.maximum(n_kept - 1, 0))
        has_tail = (n_kept > 0) & ((last + 1) * MASK_BK > N_K)
        n_full = n_kept - has_tail.to(tl.int32)

    # -- one flattened, software-pipelined loop over the BLOCK_N tiles of the kept full blocks
    for t in range(0, n_full * TILES):
        kv_block = tl.load(idx_row + t // TILES)
        start = (kv_block * MASK_BK + (t % TILES) * BLOCK_N).to(tl.int64)
        if BLOCK_D == HEAD_DIM:
            k = tl.load(k_base + start * stride_kn + k_tile)
            v = tl.load(v_base + start * stride_vn + v_tile)
        else:
            k = tl.load(k_base + start * stride_kn + k_tile, mask=k_dmask, other=0.0)
            v = tl.load(v_base + start * stride_vn + v_tile, mask=v_dmask, other=0.0)
        tile_scale = qk_scale
        if QUANT:
            tile_scale = qk_scale * tl.load(k_scale_row + kv_block)
        acc, l_i, m_i = _online_softmax_step(q, k, v, acc, l_i, m_i, tile_scale, offs_n, False, IEEE_DOT, QUANT)

    # -- the partial last block: only its tiles that hold tokens, columns masked
    if not EVEN_N:
        if has_tail:
            block_start = last * MASK_BK
            tile_scale = qk_scale
            if QUANT:
                tile_scale = qk_scale * tl.load(k_scale_row + last)
            for j in range(0, tl.cdiv(N_K - block_start, BLOCK_N)):
                start = block_start + j * BLOCK_N
                col_ok = start + offs_n < N_K
                k = tl.load(k_base + start.to(tl.int64) * stride_kn + k_tile, mask=col_ok[None, :] & k_dmask,
                            other=0.0)  # fmt: skip
                v = tl.load(v_base + start.to(tl.int64) * stride_vn + v_tile, mask=col_ok[:, None] & v_dmask,
                            other=0.0)  # fmt: skip
                acc, l_i, m_i = _online_softmax_step(q, k, v, acc, l_i, m_i, tile_scale, col_ok, True, IEEE_DOT,
                                                     QUANT)  # fmt: skip

    # -- normalize and store; a row with no kept block yields zeros and LSE -inf
    has_mass = l_i > 0.0
    acc = acc / tl.where(has_mass, l_i, 1.0)[:, None]
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
    if BLOCK_D == HEAD_DIM:
        tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=row_ok[:, None])
    else:
        tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    if OUTPUT_LSE:
        lse = tl.where(has_mass, (m_i + tl.log2(tl.where(has_mass, l_i, 1.0))) * 0.6931471805599453,
                       float("-inf"))  # fmt: skip
        tl.store(Lse + pid_bh.to(tl.int64) * N_Q + offs_m, lse, mask=row_ok)


@triton.jit
def _block_mass_kernel(
    Q, K, LSE, MASS, qk_scale_log2,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    H, N_Q, N_K, N_KV_BLOCKS,
    HEAD_DIM: tl.constexpr, MASK_BQ: tl.constexpr, MASK_BK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_N: tl.constexpr,
    IEEE_DOT: tl.constexpr,
):  # fmt: skip
    """MASS[bh, q tile, j] = sum over this tile's rows of their softmax mass on kv block j (rows past N_Q: 0)."""
    TILES: tl.constexpr = MASK_BK // BLOCK_N
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < N_Q
    d_ok = offs_d < HEAD_DIM
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd
    if BLOCK_D == HEAD_DIM:
        q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
    else:
        q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    lse_log2 = tl.load(LSE + pid_bh.to(tl.int64) * N_Q + offs_m, mask=row_ok, other=0.0) * 1.4426950408889634
    # Tiles are read in order: one pointer walks K, a BLOCK_N-token step at a time (64-bit pointer arithmetic).
    k_ptrs = K + b * stride_kb + h * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    out_row = MASS + (pid_bh.to(tl.int64) * tl.num_programs(0) + pid_m) * N_KV_BLOCKS

    n_full = N_KV_BLOCKS
    if not EVEN_N:
        n_full = N_KV_BLOCKS - 1
    row_mass = tl.zeros([BLOCK_M], dtype=tl.float32)
    for t in range(0, n_full * TILES):
        if BLOCK_D == HEAD_DIM:
            k = tl.load(k_ptrs)
        else:
            k = tl.load(k_ptrs, mask=d_ok[:, None], other=0.0)
        if IEEE_DOT:
            qk = tl.dot(q, k, input_precision="ieee")
        else:
            qk = tl.dot(q, k)
        row_mass += tl.sum(tl.exp2(qk * qk_scale_log2 - lse_log2[:, None]), 1)
        if t % TILES == TILES - 1:
            tl.store(out_row + t // TILES, tl.sum(tl.where(row_ok, row_mass, 0.0), 0))
            row_mass = tl.zeros([BLOCK_M], dtype=tl.float32)
        k_ptrs += BLOCK_N * stride_kn
    if not EVEN_N:
        # The partial last kv block: only its tiles that hold tokens, columns masked.
        for j in range(0, tl.cdiv(N_K - n_full * MASK_BK, BLOCK_N)):
            col_ok = n_full * MASK_BK + j * BLOCK_N + offs_n < N_K
            k = tl.load(k_ptrs, mask=col_ok[None, :] & d_ok[:, None], other=0.0)
            if IEEE_DOT:
                qk = tl.dot(q, k, input_precision="ieee")
            else:
                qk = tl.dot(q, k)
            p = tl.exp2(qk * qk_scale_log2 - lse_log2[:, None])
            row_mass += tl.sum(tl.where(col_ok[None, :], p, 0.0), 1)
            k_ptrs += BLOCK_N * stride_kn
        tl.store(out_row + n_full, tl.sum(tl.where(row_ok, row_mass, 0.0), 0))


@triton.jit
def _block_sparse_fwd_tma_kernel(
    Q, K, V, Out, Lse, KV_NUM, KV_IDX,
    qk_scale_log2,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_on,
    stride_numb, stride_numh, stride_numm,
    stride_idxb, stride_idxh, stride_idxm,
    H, N_Q, N_K,
    HEAD_DIM: tl.constexpr, MASK_BQ: tl.constexpr, MASK_BK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr, OUTPUT_LSE: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):  # fmt: skip
    """The same block-sparse attention on tensor descriptors (Hopper's bulk tensor copies, TMA).

    Each (batch, head) slice of Q, K, V and Out is a 2-D descriptor ``[N, HEAD_DIM]`` (head dim contiguous,
    row stride a multiple of 16 bytes); a tile load is one bulk copy that zero-fills rows past N, and the
    output store clips them. With ``WARP_SPECIALIZE`` Triton splits the loop into producer (copy) and
    consumer (MMA, softmax) warps. fp16/bf16, no quantization, HEAD_DIM a power of two.
    """
    TILES: tl.constexpr = MASK_BK // BLOCK_N
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    q_desc = tl.make_tensor_descriptor(Q + b * stride_qb + h * stride_qh, shape=[N_Q, HEAD_DIM],
                                       strides=[stride_qn, 1], block_shape=[BLOCK_M, HEAD_DIM])  # fmt: skip
    k_desc = tl.make_tensor_descriptor(K + b * stride_kb + h * stride_kh, shape=[N_K, HEAD_DIM],
                                       strides=[stride_kn, 1], block_shape=[BLOCK_N, HEAD_DIM])  # fmt: skip
    v_desc = tl.make_tensor_descriptor(V + b * stride_vb + h * stride_vh, shape=[N_K, HEAD_DIM],
                                       strides=[stride_vn, 1], block_shape=[BLOCK_N, HEAD_DIM])  # fmt: skip
    o_desc = tl.make_tensor_descriptor(Out + b * stride_ob + h * stride_oh, shape=[N_Q, HEAD_DIM],
                                       strides=[stride_on, 1], block_shape=[BLOCK_M, HEAD_DIM])  # fmt: skip
    offs_n = tl.arange(0, BLOCK_N)
    mask_row = (pid_m * BLOCK_M) // MASK_BQ
    q = q_desc.load([pid_m * BLOCK_M, 0])
    n_kept = tl.load(KV_NUM + b * stride_numb + h * stride_numh + mask_row * stride_numm)
    idx_row = KV_IDX + b * stride_idxb + h * stride_idxh + mask_row * stride_idxm

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    n_full = n_kept
    if not EVEN_N:
        last = tl.load(idx_row + tl.maximum(n_kept - 1, 0))
        has_tail = (n_kept > 0) & ((last + 1) * MASK_BK > N_K)
        n_full = n_kept - has_tail.to(tl.int32)
    for t in tl.range(0, n_full * TILES, warp_specialize=WARP_SPECIALIZE):
        kv_block = tl.load(idx_row + t // TILES)
        start = kv_block * MASK_BK + (t % TILES) * BLOCK_N
        k = k_desc.load([start, 0])
        v = v_desc.load([start, 0])
        acc, l_i, m_i = _online_softmax_step(q, k.T, v, acc, l_i, m_i, qk_scale_log2, offs_n, False, False, False)
    if not EVEN_N:
        if has_tail:
            block_start = last * MASK_BK
            for j in range(0, tl.cdiv(N_K - block_start, BLOCK_N)):
                start = block_start + j * BLOCK_N
                k = k_desc.load([start, 0])
                v = v_desc.load([start, 0])
                col_ok = start + offs_n < N_K
                acc, l_i, m_i = _online_softmax_step(q, k.T, v, acc, l_i, m_i, qk_scale_log2, col_ok, True, False,
                                                     False)  # fmt: skip

    has_mass = l_i > 0.0
    acc = acc / tl.where(has_mass, l_i, 1.0)[:, None]
    o_desc.store([pid_m * BLOCK_M, 0], acc.to(Out.dtype.element_ty))
    if OUTPUT_LSE:
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        lse = tl.where(has_mass, (m_i + tl.log2(tl.where(has_mass, l_i, 1.0))) * 0.6931471805599453,
                       float("-inf"))  # fmt: skip
        tl.store(Lse + pid_bh.to(tl.int64) * N_Q + offs_m, lse, mask=offs_m < N_Q)


@triton.jit
def _pyramid_step(q, k, v, acc, l_i, m_i, qk_scale, col_bias, BIAS: tl.constexpr, MASKED: tl.constexpr,
                  IEEE_DOT: tl.constexpr):  # fmt: skip
    """One tile of the pyramid online softmax; scores ``qk * qk_scale + log2 |g|`` in log2 units.

    Unmasked tiles hold whole groups of ``2^LEVEL`` tokens, so ``log2 |g|`` is the constant ``BIAS`` and rides
    in the same FMA as the scale; masked tiles add ``col_bias`` per column (``log2 |g|``, ``-inf`` where a
    column holds no token). Column 0 of every tile holds a token, so a row's first tile sets a finite max.
    """
    if IEEE_DOT:
        qk = tl.dot(q, k, input_precision="ieee")
    else:
        qk = tl.dot(q, k)
    if MASKED:
        qk = qk * qk_scale + col_bias[None, :]
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp2(qk - m_new[:, None])
    else:
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale + BIAS)
        p = tl.exp2(qk * qk_scale + (BIAS - m_new)[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    if IEEE_DOT:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
    else:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, l_i, m_new


@triton.jit
def _pyramid_load(k_ptrs, v_ptrs, col_ok, d_ok, MASK_COLS: tl.constexpr, MASK_D: tl.constexpr):
    """A K tile ``(BLOCK_D, TILE_N)`` and a V tile ``(TILE_N, BLOCK_D)``, masked only where asked."""
    if MASK_COLS:
        k = tl.load(k_ptrs, mask=col_ok[None, :] & d_ok[:, None], other=0.0)
        v = tl.load(v_ptrs, mask=col_ok[:, None] & d_ok[None, :], other=0.0)
    elif MASK_D:
        k = tl.load(k_ptrs, mask=d_ok[:, None], other=0.0)
        v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
    else:
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    return k, v


@triton.jit
def _pyramid_level(
    q, acc, l_i, m_i, qk_scale, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, n_kept, idx_row,
    N_K, N_KV_BLOCKS, offs_d,
    LEVEL: tl.constexpr, HEAD_DIM: tl.constexpr, MASK_BK: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, EVEN_N: tl.constexpr, IEEE_DOT: tl.constexpr,
):  # fmt: skip
    """One level's kept blocks: ``MASK_BK >> LEVEL`` keys each (tokens at level 0, pooled groups above).

    Loads are masked only at level 0's partial last block (K and V end at N_K): a pooled table holds every
    group of its last block (zeros past the sequence end) and is followed by at least 16 more rows, so a tile
    wider than a block (``NARROW``) stays inside it; the bias ``-inf`` drops the columns that are not its keys.
    """
    GROUP: tl.constexpr = 1 << LEVEL
    KEYS: tl.constexpr = MASK_BK // GROUP
    # A dot needs at least 16 columns: a block with fewer keys is read as one 16-key tile, the rest dropped.
    TILE_N: tl.constexpr = max(16, min(BLOCK_N, KEYS))
    NARROW: tl.constexpr = KEYS < TILE_N
    TILES: tl.constexpr = max(1, KEYS // TILE_N)
    MASK_D: tl.constexpr = BLOCK_D != HEAD_DIM
    offs_n = tl.arange(0, TILE_N)
    d_ok = offs_d < HEAD_DIM
    k_tile = offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd  # (BLOCK_D, TILE_N)
    v_tile = offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd  # (TILE_N, BLOCK_D)
    narrow_bias = tl.where(offs_n < KEYS, LEVEL * 1.0, float("-inf"))

    # Kept ids ascend: only the last one can be the sequence's partial last block, left to the tail below.
    n_full = n_kept
    if not EVEN_N:
        last = tl.load(idx_row + tl.maximum(n_kept - 1, 0))
        has_tail = (n_kept > 0) & (last == N_KV_BLOCKS - 1)
        n_full = n_kept - has_tail.to(tl.int32)

    # -- one flattened, software-pipelined loop over the tiles of this level's whole blocks
    for t in range(0, n_full * TILES):
        kv_block = tl.load(idx_row + t // TILES)
        start = (kv_block * KEYS + (t % TILES) * TILE_N).to(tl.int64)
        k, v = _pyramid_load(k_base + start * stride_kn + k_tile, v_base + start * stride_vn + v_tile, offs_n, d_ok,
                             False, MASK_D)  # fmt: skip
        acc, l_i, m_i = _pyramid_step(q, k, v, acc, l_i, m_i, qk_scale, narrow_bias, LEVEL, NARROW, IEEE_DOT)

    # -- the partial last block: its tiles that hold tokens; a short last group stands for fewer tokens
    if not EVEN_N:
        if has_tail:
            tokens = N_K - (N_KV_BLOCKS - 1) * MASK_BK
            groups = tl.cdiv(tokens, GROUP)
            for j in range(0, tl.cdiv(groups, TILE_N)):
                g = j * TILE_N + offs_n
                col_ok = g < groups
                if LEVEL == 0:
                    col_bias = tl.where(col_ok, 0.0, float("-inf"))
                else:
                    count = tl.maximum(tl.minimum(tokens - g * GROUP, GROUP), 1).to(tl.float32)
                    col_bias = tl.where(col_ok, tl.log2(count), float("-inf"))
                start = (last * KEYS + j * TILE_N).to(tl.int64)
                k, v = _pyramid_load(k_base + start * stride_kn + k_tile, v_base + start * stride_vn + v_tile, col_ok,
                                     d_ok, LEVEL == 0, MASK_D)  # fmt: skip
                acc, l_i, m_i = _pyramid_step(q, k, v, acc, l_i, m_i, qk_scale, col_bias, LEVEL, True, IEEE_DOT)
    return acc, l_i, m_i


@triton.jit
def _pyramid_fwd_kernel(
    Q, K, V, K_POOL, V_POOL, Out, Lse, LEVEL_NUM, LEVEL_IDX,
    qk_scale_log2,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_pb, stride_ph, stride_pn, stride_pd,
    stride_numl, stride_numb, stride_numh, stride_numm,
    stride_idxl, stride_idxb, stride_idxh, stride_idxm,
    H, N_Q, N_K, N_KV_BLOCKS,
    HEAD_DIM: tl.constexpr, MASK_BQ: tl.constexpr, MASK_BK: tl.constexpr, MAX_LEVEL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_N: tl.constexpr,
    OUTPUT_LSE: tl.constexpr, IEEE_DOT: tl.constexpr,
):  # fmt: skip
    """Pyramid attention: one online softmax over each row's full blocks (K, V) and pooled blocks (K_POOL, V_POOL).

    K_POOL and V_POOL stack the pooled tables of levels 1 .. MAX_LEVEL along the key axis, ``(B, H, G, D)``:
    level ``j`` holds ``P >> j`` groups (``P = N_KV_BLOCKS * MASK_BK``) from row ``P - (P >> (j - 1))`` on,
    groups past the sequence end zero, and at least 16 rows follow the last level. LEVEL_NUM
    ``(MAX_LEVEL + 1, B or 1, H, nQ)`` and LEVEL_IDX ``(MAX_LEVEL + 1, B or 1, H, nQ, nK)`` are
    :meth:`~dit_sparse.LevelMask.level_tables`.
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    # int64 bases: B x H x N x D may pass 2^31 elements; offsets inside one tile stay int32. With H > 0 known,
    # b and h widen with zero high words, two registers fewer held across the levels (ptxas spilled them).
    tl.assume(H > 0)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)

    # -- this program's query rows and its q block's rows of the level tables
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < N_Q
    d_ok = offs_d < HEAD_DIM
    mask_row = (pid_m * BLOCK_M) // MASK_BQ
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd
    if BLOCK_D == HEAD_DIM:
        q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
    else:
        q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    num_row = LEVEL_NUM + b * stride_numb + h * stride_numh + mask_row * stride_numm
    idx_row = LEVEL_IDX + b * stride_idxb + h * stride_idxh + mask_row * stride_idxm
    padded_keys = N_KV_BLOCKS * MASK_BK

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # -- level 0 reads K and V; level j its slice of the pooled tables; one softmax runs through all of them
    for LEVEL in tl.static_range(MAX_LEVEL + 1):
        n_kept = tl.load(num_row + LEVEL * stride_numl)
        level_idx = idx_row + LEVEL * stride_idxl
        if LEVEL == 0:
            acc, l_i, m_i = _pyramid_level(
                q, acc, l_i, m_i, qk_scale_log2, K + b * stride_kb + h * stride_kh, V + b * stride_vb + h * stride_vh,
                stride_kn, stride_kd, stride_vn, stride_vd, n_kept, level_idx, N_K, N_KV_BLOCKS, offs_d,
                LEVEL, HEAD_DIM, MASK_BK, BLOCK_N, BLOCK_D, EVEN_N, IEEE_DOT,
            )  # fmt: skip
        else:
            first = (padded_keys - (padded_keys >> (LEVEL - 1))).to(tl.int64)
            offset = b * stride_pb + h * stride_ph + first * stride_pn
            acc, l_i, m_i = _pyramid_level(
                q, acc, l_i, m_i, qk_scale_log2, K_POOL + offset, V_POOL + offset,
                stride_pn, stride_pd, stride_pn, stride_pd, n_kept, level_idx, N_K, N_KV_BLOCKS, offs_d,
                LEVEL, HEAD_DIM, MASK_BK, BLOCK_N, BLOCK_D, EVEN_N, IEEE_DOT,
            )  # fmt: skip

    # -- normalize and store; a row that reads no block at any level yields zeros and LSE -inf
    has_mass = l_i > 0.0
    acc = acc / tl.where(has_mass, l_i, 1.0)[:, None]
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
    if BLOCK_D == HEAD_DIM:
        tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=row_ok[:, None])
    else:
        tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    if OUTPUT_LSE:
        lse = tl.where(has_mass, (m_i + tl.log2(tl.where(has_mass, l_i, 1.0))) * 0.6931471805599453,
                       float("-inf"))  # fmt: skip
        tl.store(Lse + pid_bh.to(tl.int64) * N_Q + offs_m, lse, mask=row_ok)
