"""Search spaces the Ray tests run (YAML text)."""

# A 2 x 2 grid on the micro-smoke ladder that a Ray test runs in seconds.
SMOKE = """\
name: smoke
ladder: micro-smoke
scales: [xs, s]
methods:
  fft: {}
  lora: {}
data: {source: local-code, seq_len: 128, max_val_sequences: 8}
recipe: {lr: 3.0e-3, steps: 10, warmup_steps: 1, eval_every: 5, global_batch: 4, micro_batch: 4, precision: fp32}
resources: {workers: 1, cpus_per_worker: 1}
cost: {accelerator: cpu-core}
"""
