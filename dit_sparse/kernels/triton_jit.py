"""Triton sources of our GPU kernels (imported on first use, never by ``import dit_sparse``).

- ``_block_sparse_fwd_kernel``: block-sparse flash attention, launched, autotuned and documented by
  :mod:`dit_sparse.kernels.triton_block_sparse`.
- ``_block_mass_kernel``: each q block's attention mass on each kv block, given the rows' LSE, for the
  dynamic methods' searches; launched by :func:`dit_sparse.scoring.block_attention_mass`.

Both walk their kv tokens in one flattened, software-pipelined loop over ``BLOCK_N`` tiles (so shared memory
grows with ``BLOCK_N`` and ``num_stages``, not with the mask block), mask only the sequence's partial last kv
block, take the head dim as a constant and compute base offsets in int64.
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
