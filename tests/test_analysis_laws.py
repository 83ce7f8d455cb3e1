"""Contract every law must satisfy: its basis derivative is right, and a fit recovers it from clean data."""

import numpy as np
import pytest

from analysis.fitting import FitData, fit
from analysis.laws import LAWS
from analysis.solver import Problem

# A point inside each law's usual range: (exponents, coefficients, X sampler).
CASES = {
    "power": ((0.3,), (1.7, 40.0), lambda: np.geomspace(1e6, 1e10, 9)[:, None]),
    "loglog": ((0.12,), (25.0,), lambda: np.geomspace(1e6, 1e10, 9)[:, None]),
    "curved": ((), (3.0, -0.05, -0.002), lambda: np.geomspace(1e6, 1e10, 9)[:, None]),
    "chinchilla": ((0.34, 0.28), (1.8, 400.0, 400.0),
                   lambda: np.column_stack([np.repeat(np.geomspace(1e7, 1e10, 5), 4),
                                            np.tile(np.geomspace(1e9, 1e12, 4), 5)])),
    "multiplicative": ((0.2, 0.1), (1.2, 30.0),
                       lambda: np.column_stack([np.repeat(np.geomspace(1e7, 1e10, 4), 3),
                                                np.tile(np.geomspace(1e5, 1e7, 3), 4)])),
    "sigmoid": ((6.0, 2.2), (0.05, 0.8), lambda: np.linspace(1.5, 3.0, 10)[:, None]),
    "exponential": ((1.1,), (0.8, 6.0), lambda: np.linspace(2.4, 6.0, 10)[:, None]),
}


def test_every_registered_law_has_a_case():
    assert sorted(CASES) == sorted(LAWS.names())


@pytest.mark.parametrize("name", sorted(CASES))
def test_jacobian_matches_finite_differences(name):
    law = LAWS.get(name)
    exponents, coefficients, sample = CASES[name]
    X = sample()
    y = law.predict(np.array([exponents]), np.array([coefficients]), X)[0] * 1.01
    problem = Problem(law=law, X=X, y=y, groups=np.zeros(len(y), dtype=int))
    theta = problem.pack(np.array([exponents]), np.array([[coefficients]]))
    _, jac = problem.evaluate(theta)
    step = 1e-6 * np.maximum(np.abs(theta[0]), 1.0)
    for j in range(problem.n_params):
        up, down = theta.copy(), theta.copy()
        up[0, j] += step[j]
        down[0, j] -= step[j]
        numeric = (problem.evaluate(up)[0] - problem.evaluate(down)[0]) / (2 * step[j])
        np.testing.assert_allclose(jac[0, :, j], numeric[0], rtol=1e-5, atol=1e-8, err_msg=f"{name} param {j}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_fit_recovers_clean_data(name):
    law = LAWS.get(name)
    exponents, coefficients, sample = CASES[name]
    X = sample()
    y = law.predict(np.array([exponents]), np.array([coefficients]), X)[0]
    result = fit(law, FitData.single(X, y))
    assert result.converged and result.identifiable
    truth = dict(zip((*law.exponents, *law.coefficients), (*exponents, *coefficients), strict=True))
    for key, value in result.params("all").items():
        assert value == pytest.approx(truth[key], rel=1e-4), key


def test_joint_problem_moves_only_a_points_own_group_coefficients():
    law = LAWS.get("power")
    X = np.geomspace(1e6, 1e9, 6)[:, None]
    groups = np.array([0, 0, 0, 1, 1, 1])
    problem = Problem(law=law, X=X, y=np.full(6, 2.0), groups=groups, n_groups=2)
    theta = problem.pack(np.array([[0.3]]), np.array([[[1.5, 30.0], [1.6, 20.0]]]))
    _, jac = problem.evaluate(theta)
    assert np.all(jac[0, :3, 3:] == 0) and np.all(jac[0, 3:, 1:3] == 0)
    assert np.all(jac[0, :, 0] != 0)  # the shared exponent moves every point
