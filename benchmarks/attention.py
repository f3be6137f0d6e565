"""Attention benchmark: block-sparse backends against dense attention measured in the same run.

The implementation lives in :mod:`dit_sparse.bench.attention`; this script is its command line.

CPU (fp32, N 2048 and 8192, D 64, 4 heads; a few minutes on two cores, mostly FlexAttention compiling)::

    python benchmarks/attention.py --device cpu --out benchmarks/results/attention_cpu.json

GPU (bf16, N 4096 to 75600, D 64 and 128, 12 heads; dense SDPA, FlashAttention, cuDNN and xformers
baselines)::

    python benchmarks/attention.py --device cuda --out benchmarks/results/attention_gpu.json

A few seconds on any machine (N 512, reference backend; add ``--backends reference,flex`` for flex)::

    python benchmarks/attention.py --quick

Densities are percentages or fractions (``--densities 100,50,25,10,5`` or ``1,0.5,0.25,0.1,0.05``);
``--help`` lists every option.
"""

from dit_sparse.bench.attention import main

raise SystemExit(main())
