"""Downstream evaluation of tuned models: code tasks, robustness, security, in a sandbox.

Modules (import them directly; this package stays light because the CLI imports it at start-up):
- `evaluate`: `evaluate_model(loaded, tasks, ...)` -> rows; `score_generations(task, path, ...)`.
- `tasks`: the task registry `TASKS` (synthesize, fix, explain, clone/defect detection, robustness,
  security, and likelihood-scored `-ll` variants).
- `sandbox` (+ `sandbox_worker`): runs untrusted programs; `metrics`: pass@k and friends;
  `problems`: HumanEval / HumanEvalPack; `lm`: the model interface; `mutate`, `perturb`: offline
  bugs and ReCode-style perturbations.
"""
