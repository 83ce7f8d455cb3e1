"""The micro ladder: small GPTBigCode models pretrained by sweeper on real Python code.

- `config`: the corpus, tokenizer and pretraining-recipe configs, and what building needs of a ladder.
- `ladder`: the scales and their recipes; registers `micro` and `micro-smoke` (no torch).
- `corpus`: the Python files on this machine, deduplicated, split train / held out by hash.
- `tokenizer`: the byte-level BPE trained on the corpus.
- `pretrain`: pretraining of one scale (what each worker process runs).
- `build`: corpus -> tokenizer -> pretraining -> cache (`sweeper.core.cache`); loading a scale.
"""
