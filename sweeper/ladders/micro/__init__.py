"""The micro ladder: small GPTBigCode models pretrained by sweeper on real Python code.

- `ladder`: the scales, corpus, tokenizer and pretraining recipes; registers `micro` (no torch).
- `corpus`: the Python files on this machine, deduplicated, split train / held out by hash.
- `tokenizer`: the byte-level BPE trained on the corpus.
- `pretrain`: pretraining of one scale (what each worker process runs).
- `build`: corpus -> tokenizer -> pretraining -> cache; loading a scale.
- `cache`: content-addressed cache entries, verified by sha256, written atomically.
- `commands`: `sweeper ladder build|show`.
"""
