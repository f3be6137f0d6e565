"""Output error of fp32, fp16, int8 and int4 (quantized Q/K) block-sparse attention against exact attention.

The implementation lives in :mod:`dit_sparse.bench.quant`; this script is its command line. Under a minute
on two CPU cores::

    python benchmarks/quant_quality.py                  # 9 x 16 x 16 tokens, block 64, 25% density
    python benchmarks/quant_quality.py --order HWF      # tokens reordered before the mask is chosen
    python benchmarks/quant_quality.py --out rows.json
    python benchmarks/quant_quality.py --source embedded --order paro   # trained model, PARO's per-head orders
"""

from dit_sparse.bench.quant import main

raise SystemExit(main())
