"""Prompt adherence of the embedded model: colour and direction of the moving object over 40 seeded samples.

python benchmarks/prompt_adherence.py                              # dense
python benchmarks/prompt_adherence.py --method radial --out radial.json
python benchmarks/prompt_adherence.py --sheet sheet.png      # also every sample as a row of 5 frames
"""

from dit_sparse.embedded.adherence import main

raise SystemExit(main())
