"""Attention-output error of each static pattern against dense attention, at densities 50/25/10%.

python benchmarks/pattern_quality.py                 # 9 x 16 x 16 tokens, block 64
python benchmarks/pattern_quality.py --out rows.json
python benchmarks/pattern_quality.py --source embedded  # q/k/v of the trained embedded model, step 10 of 20
"""

from dit_sparse.bench.patterns import main

raise SystemExit(main())
