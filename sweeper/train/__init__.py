"""Training one trial: the optimizer (`optim`), the engines, the per-worker loop and what it leaves on storage."""
