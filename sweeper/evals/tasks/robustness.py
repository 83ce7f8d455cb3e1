"""A stand-in for ReCode (the real one: `recode`): HumanEvalSynthesize under home-made perturbed prompts.

Items are grouped by problem: the nominal prompt, then one prompt per perturbation in
`sweeper.evals.perturb`. Metrics:
- `robust_pass@k`: ReCode's robust pass, sample j counts only if it passes under every perturbed
  prompt (the nominal one not included), then the unbiased pass@k estimator.
- `nominal_pass@k`: the unperturbed prompts alone (HumanEvalSynthesize on the same problems).
- `perturbed_pass@k`: every perturbed prompt scored as its own problem.
"""

from __future__ import annotations

from sweeper.evals.metrics import Metric, pass_at_k_metrics, robust_results
from sweeper.evals.perturb import PERTURBATIONS
from sweeper.evals.tasks.base import TASKS, Context, ProgramItem, ProgramTask
from sweeper.evals.tasks.humanevalpack import synthesize_item


@TASKS.register("robustness-proxy")
class Robustness(ProgramTask):
    name = "robustness-proxy"
    summary = ("stand-in for ReCode, offline: HumanEvalSynthesize under home-made prompt perturbations (one variant "
               "each); robust pass@k")

    def items(self, ctx: Context) -> list[ProgramItem]:
        items = []
        for problem in ctx.problems():
            items.append(synthesize_item(problem))
            items.extend(synthesize_item(PERTURBATIONS.get(name)(problem)) for name in PERTURBATIONS)
        return items

    def metrics(self, results: list[list[bool]]) -> list[Metric]:
        variants = len(PERTURBATIONS.names()) + 1
        groups = [results[start : start + variants] for start in range(0, len(results), variants)]
        robust = [robust_results(group[1:]) for group in groups]
        nominal = [group[0] for group in groups]
        perturbed = [samples for group in groups for samples in group[1:]]
        return [
            *pass_at_k_metrics(robust, "robust_"),
            *pass_at_k_metrics(nominal, "nominal_"),
            *pass_at_k_metrics(perturbed, "perturbed_"),
        ]
