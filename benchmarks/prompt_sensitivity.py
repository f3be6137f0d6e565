"""How much the embedded transformer's prediction depends on each word of a prompt (relative L2 change when
one word is swapped, at three noise levels): a word it has not learnt scores near 0.

python benchmarks/prompt_sensitivity.py
python benchmarks/prompt_sensitivity.py --model /path/to/trained/folder --out sensitivity.json
python benchmarks/prompt_sensitivity.py --steering 0.6,0.8,1.0   # does the direction word steer video-to-video?
"""

from dit_sparse.embedded.adherence import sensitivity_main

raise SystemExit(sensitivity_main())
