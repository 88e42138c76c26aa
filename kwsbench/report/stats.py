"""Paired tests across seeds and the verdict rules of a report: when a claim is supported, contradicted or
undecided by the data.

An ordering ("A beats B") is decided on the per-seed differences A - B of trials that share a seed, a
recipe and a dataset. The decision test is the two-sided paired t-test (its confidence interval for the
mean difference excludes 0 exactly when p < alpha); the Wilcoxon signed-rank test is reported beside it as
the check that does not assume normal differences. Too few pairs, or an interval that contains 0, is
*undecided*: one seed never decides anything.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
UNDECIDED = "undecided"
NOT_COMPARABLE = "not comparable"
VERDICTS = (SUPPORTED, CONTRADICTED, UNDECIDED, NOT_COMPARABLE)

# Significance level of every paired test, two-sided (the confidence intervals are 1 - ALPHA).
ALPHA = 0.05
# Fewest matched seeds for a paired verdict: two pairs leave a t-test one degree of freedom, whose 95 %
# interval is +-12.7 standard errors wide, so a "significant" result there is an accident of rounding.
MIN_PAIRS = 3
# Accuracies are multiples of 1/clips; differences are rounded to this many decimals so that equal
# differences compare equal instead of differing in the last bit.
_DECIMALS = 12


@dataclass(frozen=True)
class PairedTest:
    """The paired comparison of ``n`` matched seeds; differences are ``better - worse`` (fractions)."""

    n: int
    mean_diff: float
    std_diff: float
    t_statistic: float | None
    p_t: float | None
    ci_low: float | None
    ci_high: float | None
    p_wilcoxon: float | None
    effect_size: float | None  # Cohen's d_z: mean difference over the standard deviation of differences
    confidence: float = 1 - ALPHA

    def verdict(self, alpha: float = ALPHA, min_pairs: int = MIN_PAIRS) -> tuple[str, str]:
        """(verdict, reason): *supported* when the interval lies above 0, *contradicted* below, else undecided."""
        if self.n < min_pairs:
            return UNDECIDED, f"too few matched seeds ({self.n}; at least {min_pairs} needed)"
        if self.std_diff == 0:
            what = (
                "no difference in any pair"
                if self.mean_diff == 0
                else "every pair differs by the same amount"
            )
            return UNDECIDED, f"{what}: the t-test is undefined"
        assert self.p_t is not None
        if self.p_t >= alpha:
            return UNDECIDED, f"not significant (paired t-test p = {self.p_t:.3g} >= {alpha})"
        if self.mean_diff > 0:
            return SUPPORTED, f"paired t-test p = {self.p_t:.3g} < {alpha}"
        return CONTRADICTED, f"the opposite holds: paired t-test p = {self.p_t:.3g} < {alpha}"

    def evidence(self, scale: float = 100.0, unit: str = " pp") -> str:
        """One line: pairs, mean difference, interval, both p-values and the effect size."""
        parts = [f"n = {self.n} seeds", f"mean diff {self.mean_diff * scale:+.2f}{unit}"]
        if self.ci_low is not None and self.ci_high is not None:
            parts.append(
                f"{self.confidence:.0%} CI [{self.ci_low * scale:+.2f}, {self.ci_high * scale:+.2f}]{unit}"
            )
        if self.p_t is not None:
            parts.append(f"paired t p = {self.p_t:.3g}")
        if self.p_wilcoxon is not None:
            floor = min_wilcoxon_p(self.n)
            note = f" (its floor with {self.n} pairs is {floor:.3g})" if floor >= ALPHA else ""
            parts.append(f"Wilcoxon p = {self.p_wilcoxon:.3g}{note}")
        if self.effect_size is not None:
            parts.append(f"d_z = {self.effect_size:.2f}")
        return "; ".join(parts)


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided exact p-value the signed-rank test can give with ``n`` non-zero pairs."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def paired_test(better: Sequence[float], worse: Sequence[float], confidence: float = 1 - ALPHA) -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test of ``better - worse`` (same seed at the same index)."""
    if len(better) != len(worse):
        raise ValueError(f"paired samples differ in length: {len(better)} and {len(worse)}")
    diffs = [round(b - w, _DECIMALS) for b, w in zip(better, worse, strict=True)]
    n = len(diffs)
    mean = math.fsum(diffs) / n if n else 0.0
    std = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    std = 0.0 if all(d == diffs[0] for d in diffs) else std
    if n < 2 or std == 0:
        return PairedTest(n, mean, std, None, None, None, None, None, None, confidence)
    with warnings.catch_warnings():
        # scipy warns on nearly constant input; the exact constant case is handled above.
        warnings.simplefilter("ignore", RuntimeWarning)
        t = scipy_stats.ttest_rel(better, worse)
        interval = t.confidence_interval(confidence)
        nonzero = [d for d in diffs if d != 0]
        p_w = float(scipy_stats.wilcoxon(nonzero).pvalue) if nonzero else None
    return PairedTest(
        n=n,
        mean_diff=mean,
        std_diff=std,
        t_statistic=float(t.statistic),
        p_t=float(t.pvalue),
        ci_low=float(interval.low),
        ci_high=float(interval.high),
        p_wilcoxon=p_w,
        effect_size=mean / std,
        confidence=confidence,
    )


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for no value; std None for one value)."""
    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
