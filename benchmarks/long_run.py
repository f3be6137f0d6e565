"""Long-run check on the embedded model: many generations in one process, switching sizes, guidance and methods.

The implementation lives in :mod:`dit_sparse.bench.long_run`; this script is its command line::

    python benchmarks/long_run.py --rounds 30 --out benchmarks/results/long_run.json
"""

from dit_sparse.bench.long_run import main

raise SystemExit(main())
