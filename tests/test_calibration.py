"""Contextual calibration of the YES/NO likelihood tasks (Zhao et al. 2021, arXiv 2102.09690)."""

import math

import pytest

from sweeper.data import octopack_prompt
from sweeper.evals.perturb import variable_rename
from sweeper.evals.problems import load_humaneval
from sweeper.evals.sandbox import Sandbox
from sweeper.evals.tasks import TASKS, Context
from sweeper.evals.tasks.detection import (
    ANSWERS,
    CONTENT_FREE,
    calibrated_answer,
    content_free_prior,
    plain_function,
    two_way,
)


def logs(p_no, p_yes):
    return math.log(p_no), math.log(p_yes)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(allow_weak=True) as box:  # the offline mutants are checked in it; isolation does not matter
        yield box


def test_a_prior_towards_no_flips_a_weak_no_to_yes():
    # 0.8 / 0.9 < 0.2 / 0.1: the question is less NO than the model's NO for no code at all
    assert calibrated_answer(logs(0.8, 0.2), logs(0.9, 0.1)) == 1
    assert calibrated_answer(logs(0.95, 0.05), logs(0.9, 0.1)) == 0


def test_a_uniform_prior_changes_nothing():
    uniform = logs(0.5, 0.5)
    for p_yes in (0.01, 0.3, 0.49, 0.51, 0.7, 0.99):
        assert calibrated_answer(logs(1 - p_yes, p_yes), uniform) == int(p_yes > 0.5)
    assert calibrated_answer(uniform, uniform) == 0  # a tie is NO, as the uncalibrated yes > no


def test_two_way_normalises_log_likelihoods_stably():
    no, yes = two_way(math.log(0.02), math.log(0.06))
    assert (math.exp(no), math.exp(yes)) == pytest.approx((0.25, 0.75))
    no, yes = two_way(-2000.0, -2001.0)  # far beyond exp's range: still a distribution
    assert math.exp(no) + math.exp(yes) == pytest.approx(1.0) and no > yes


def test_the_prior_is_the_mean_distribution_of_the_content_free_inputs():
    prior = content_free_prior([logs(0.9, 0.1), logs(0.7, 0.3), logs(0.8, 0.2)])
    assert (math.exp(prior[0]), math.exp(prior[1])) == pytest.approx((0.8, 0.2))
    with pytest.raises(ValueError):
        content_free_prior([])


@pytest.mark.parametrize(("name", "fields"), [("defect-detection-proxy", 1), ("clone-detection-proxy", 2)])
def test_content_free_questions_use_the_real_questions_template(name, fields, sandbox):
    task = TASKS.get(name)()
    free = task.content_free_prompts()
    assert len(free) == len(CONTENT_FREE)
    real = task.questions(Context(sandbox, limit=2))[0][0]
    # same wording around the code: the real prompt's text outside the code fields, with N/A in them
    assert free[0].count("N/A") == fields and free[0].endswith("respond to YES or NO.\n\nAnswer:")
    assert real.splitlines()[-3:] == free[0].splitlines()[-3:]
    assert free[1] == task.prompt(dict.fromkeys(["code1", "code2"] if fields == 2 else ["code"], ""))


def test_yes_no_prompts_are_unchanged_by_the_template_refactor(sandbox):
    """The prompts as the f-strings before the refactor wrote them, byte for byte."""
    ctx = Context(sandbox, limit=4)
    problem = load_humaneval()[0]
    defect = TASKS.get("defect-detection-proxy")().questions(ctx)[0]
    code = (problem.prompt + problem.canonical_solution).strip()
    assert defect == (octopack_prompt(f"Code: {code}.\nIs there a defect in the Code, and respond to YES or NO."), 0)
    clone = TASKS.get("clone-detection-proxy")().questions(ctx)[0]
    code1, code2 = plain_function(problem), plain_function(variable_rename(problem))  # item 0: a clone pair
    assert clone == (octopack_prompt(f"Code1: {code1}.\nCode2: {code2}.\n"
                                     "Is there a clone relation between the Code1 and Code2, and respond to YES or NO."), 1)


class PriorLM:
    """log p(answer | prompt): a strong pull to NO everywhere, and a smaller push to YES on the
    questions whose answer is YES: uncalibrated it says NO to all, calibrated it is right on all."""

    def __init__(self, truth):
        self.truth = truth

    def loglikelihood(self, requests):
        out = []
        for context, option in requests:
            evidence = 1.0 if self.truth.get(context) == 1 else -1.0 if context in self.truth else 0.0
            out.append((math.log(0.9) if option == ANSWERS[0] else math.log(0.1) + evidence, 1))
        return out


@pytest.mark.parametrize("name", ["defect-detection-proxy", "clone-detection-proxy"])
def test_calibration_removes_a_constant_answer(name, sandbox):
    ctx = Context(sandbox, limit=6)
    truth = dict(TASKS.get(name)().questions(ctx))
    result = TASKS.get(f"{name}-ll")().evaluate(PriorLM(truth), ctx)
    values = {m.name: m.value for m in result.metrics}
    assert values == {"accuracy": 1.0, "macro_f1": 1.0, "accuracy_uncalibrated": 0.5}
    assert result.details["yes_share"] == 0.5 and result.details["yes_share_uncalibrated"] == 0.0
    assert result.details["content_free_prior"] == pytest.approx({"NO": 0.9, "YES": 0.1})


@pytest.mark.parametrize("name", ["clone-detection-proxy-ll", "defect-detection-proxy-ll"])
def test_calibrated_answers_are_not_one_constant_across_models(name, smoke_ladder, sandbox):
    """Issue 14: uncalibrated, every micro model answered the same to every pair. Calibrated, the
    models of the (barely pretrained) smoke ladder give both answers between them."""
    from sweeper.evals.lm import HFLanguageModel
    from sweeper.ladders import get_ladder

    ladder = get_ladder(smoke_ladder)
    shares = []
    for scale in ladder.scales:
        result = TASKS.get(name)().evaluate(HFLanguageModel(ladder.load(scale)), Context(sandbox, limit=12))
        shares.append(result.details["yes_share"])
    assert 0 < sum(shares) < len(shares), shares  # some YES, some NO: not one answer everywhere
