"""Prompt adherence of the embedded model: colour and direction of the moving object over 40 seeded samples.

python benchmarks/prompt_adherence.py                              # dense
python benchmarks/prompt_adherence.py --method radial --out radial.json
"""

from dit_sparse.embedded.adherence import main

raise SystemExit(main())
