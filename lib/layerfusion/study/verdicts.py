"""The one verdict rule of the claims table and the levels it is applied at (``Levels``, read from the profile).

Every claim is judged from tests written down before they are run, each with a claimed direction (the sign the paper
predicts), a one-sided p-value in that direction and one in the opposite direction (both Holm-corrected within the
claim's family), and an equivalence test (TOST) against the profile's margin. The verdict (``judge``):

- **supported**: every required test of the claim is significant in the claimed direction (Holm, ``alpha``) and
  none in the opposite one; **partly supported**: at least one is, but not all;
- **contradicted**: none is significant in the claimed direction and at least one is significant in the opposite
  direction;
- **not supported**: nothing significant either way, and the decisive test's TOST shows the effect lies within
  ``±margin`` (equivalence shown; a margin fixed in the profile before the data are seen);
- **inconclusive**: everything else (absence of evidence is not evidence of absence).

Each one-sided family controls its error at ``alpha``: under no effect, "supported" and "contradicted" each happen
with probability at most ``alpha``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

VERDICTS = ("supported", "partly supported", "contradicted", "not supported", "inconclusive")


@dataclass(frozen=True)
class Levels:
    """The significance level, target power and equivalence margins every decision of the claims uses: ``alpha``
    and ``power`` from the profile's ``power`` block; margins from its ``claims`` block (accuracy points for
    differences, points of standard deviation for spreads, rho for correlations)."""

    alpha: float = 0.05
    power: float = 0.8
    margin_points: float = 1.0
    spread_margin: float = 0.25
    rho_margin: float = 0.2

    def __post_init__(self) -> None:
        for name in ("alpha", "power"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}; fix the profile's power "
                                 "block")
        for name in ("margin_points", "spread_margin", "rho_margin"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}; fix the profile's claims "
                                 "block")

    @classmethod
    def of(cls, config: Any) -> "Levels":
        """The levels of a ``StudyConfig`` (its ``power`` and ``claims`` blocks)."""
        c = config.claims
        return cls(alpha=config.power.alpha, power=config.power.power, margin_points=c.equivalence_margin,
                   spread_margin=c.spread_margin, rho_margin=c.correlation_margin)

    def z_two_sided(self) -> float:
        """``z_{1 - alpha/2}``: the half-width of a two-sided ``1 - alpha`` interval in standard errors."""
        return float(norm.ppf(1 - self.alpha / 2))

    def mde_factor(self, n_tests: int = 1) -> float:
        """Standard errors a one-sided test at level ``alpha / n_tests`` (Holm's first step, the worst case) needs
        to detect an effect with probability ``power``: ``z_{1 - alpha/n} + z_power``."""
        return float(norm.ppf(1 - self.alpha / max(1, n_tests)) + norm.ppf(self.power))


def one_sided(effect: float, p_two_sided: float, claimed_sign: int) -> tuple[float, float]:
    """One-sided p-values (claimed direction, opposite direction) from a symmetric two-sided test's p-value and the
    sign of its effect: the tail the effect lies in gets half the two-sided p, the other ``1 - p/2``."""
    if not (np.isfinite(effect) and np.isfinite(p_two_sided)):
        return float("nan"), float("nan")
    half = p_two_sided / 2
    if effect == 0:
        return 1 - half, 1 - half
    toward = np.sign(effect) == np.sign(claimed_sign)
    return (half, 1 - half) if toward else (1 - half, half)


def judge(claimed: list[bool], opposite: list[bool], equivalent: bool) -> str:
    """The verdict rule (module docstring). ``claimed``/``opposite``: per required test, whether it is significant
    (Holm, ``alpha``) in the claimed / the opposite direction; ``equivalent``: the decisive test's TOST shows
    equivalence within the margin."""
    if any(claimed):
        return "supported" if all(claimed) and not any(opposite) else "partly supported"
    if any(opposite):
        return "contradicted"
    return "not supported" if equivalent else "inconclusive"
