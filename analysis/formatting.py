"""Numbers as a paper prints them: an estimate and its interval to the precision the interval supports.

`3.7634 [3.7091, 3.7812]` claims four digits that a 0.07-wide interval does not have; the convention
is to round so that the interval's narrower side shows two significant digits: `3.763 [3.709, 3.781]`,
`0.147 [0.089, 0.215]`. A positive coefficient that reached its bound 0 prints as `0 (at bound)`,
not as the `4.86e-12` where the optimiser stopped approaching it.
"""

import math

SIGNIFICANT = 4  # digits of a number printed without an interval, and the most any number gets
# Outside this range of magnitudes fixed decimals read badly: scientific notation instead.
FIXED_RANGE = (1e-3, 1e5)
ZERO_WIDTH = 1e-9  # an interval narrower than this fraction of its estimate has zero width


def number(value: float | None, digits: int = SIGNIFICANT) -> str:
    """`digits` significant digits; "n/a" for a missing or non-finite value."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def percent(value: float, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}%}"


def with_interval(estimate: float, lower: float, upper: float, zero_below: float = 0.0) -> str:
    """`estimate [lower, upper]` rounded to the interval's precision. Values of magnitude below
    `zero_below` (a coefficient at its bound 0, see `analysis.fitting.Fit.negligible`) print as 0, the
    estimate as `0 (at bound)`."""
    values = [0.0 if abs(v) < zero_below else v for v in (estimate, lower, upper)]
    head = "0 (at bound)" if estimate != 0 and values[0] == 0 else None
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return f"{head or number(estimate)} (no interval)"
    if head is None and upper - lower <= ZERO_WIDTH * max(abs(estimate), 1e-300):
        # Every usable resample refitted the same curve (e.g. the points that pin it down were
        # always drawn): the interval says nothing, and "[3.969, 3.969]" would read as certainty.
        return f"{number(estimate)} (interval of zero width)"
    decimals = _decimals(*values)
    estimate_text, lower_text, upper_text = (_fixed(v, decimals) for v in values)
    return f"{head or estimate_text} [{lower_text}, {upper_text}]"


def _decimals(estimate: float, lower: float, upper: float) -> int | None:
    """Decimal places, the same for the three numbers: enough to show the interval's narrower (non-zero)
    side to two significant digits and the estimate to at least two, and never more than SIGNIFICANT
    digits of the estimate. None: no usable scale (print significant digits instead)."""
    sides = [side for side in (abs(estimate - lower), abs(upper - estimate)) if side > 0 and math.isfinite(side)]
    if not sides:
        return None
    decimals = 1 - math.floor(math.log10(min(sides)))
    reference = abs(estimate) or max(abs(lower), abs(upper))
    if reference > 0:
        leading = math.floor(math.log10(reference))
        decimals = min(max(decimals, 1 - leading), SIGNIFICANT - 1 - leading)
    return max(0, decimals)


def _fixed(value: float, decimals: int | None) -> str:
    if value == 0:
        return "0"
    if decimals is None or not math.isfinite(value) or not FIXED_RANGE[0] <= abs(value) < FIXED_RANGE[1]:
        return number(value, SIGNIFICANT if decimals is None else 3)
    # A bound far from the estimate (9563 next to 14.8) keeps SIGNIFICANT digits, not 9563.0.
    decimals = min(decimals, max(0, SIGNIFICANT - 1 - math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"
