"""Error ratios with confidence bounds: is this revision's error ratio really above the threshold? Pure.

A ratio of 3 errors in 20 requests is 15 %, but with so few requests the true rate could be
anywhere from about 5 % to 36 %. :func:`ratio` returns the observed ratio together with its Wilson
score interval, so a caller can ask "is even the *lower* bound above 5 %?"
(``Ratio.lower``) before rolling back. Latency histograms are in ``controller.core.stats``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEFAULT_Z", "Ratio", "ratio", "wilson_interval"]

# z for a two-sided 95 % interval; the conventional 1.96 rather than 1.959963984540054, because a
# threshold check does not get better with more digits and 1.96 is what people compute by hand.
DEFAULT_Z = 1.96


def wilson_interval(successes: int, trials: int, z: float = DEFAULT_Z) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / trials``.

    With p̂ = successes/n and z the normal quantile (1.96 for 95 %), the bounds are the two
    solutions p of the score-test equation ``(p̂ - p)² = z²·p·(1 - p)/n``::

        centre = (p̂ + z²/(2n)) / (1 + z²/n)
        half   = z / (1 + z²/n) · sqrt(p̂(1 - p̂)/n + z²/(4n²))
        (lower, upper) = (centre - half, centre + half)

    Unlike the textbook "p̂ ± z·sqrt(p̂(1-p̂)/n)" interval it never leaves [0, 1] and does not
    collapse to a point at 0 or n successes (0 of 10 gives (0, 0.2775), not (0, 0)); that matters
    because a new revision usually starts with few requests. The bound at 0 successes is exactly
    0.0 and at n successes exactly 1.0. ``trials == 0`` carries no information: (0.0, 1.0).
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if not (z > 0 and math.isfinite(z)):
        raise ValueError(f"z must be a positive finite number, got {z}")
    if trials == 0:
        return (0.0, 1.0)
    n = float(trials)
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denominator
    half = (z / denominator) * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    # Clamp rounding noise and make the degenerate ends exact (centre - half is 0 in exact
    # arithmetic when successes == 0, but may come out as ±1e-17 in floating point).
    lower = 0.0 if successes == 0 else max(0.0, centre - half)
    upper = 1.0 if successes == trials else min(1.0, centre + half)
    return (lower, upper)


@dataclass(frozen=True)
class Ratio:
    """An observed ratio ``errors / requests`` with its Wilson score interval ``[lower, upper]``.

    ``value`` is 0.0 when there were no requests (and the interval is then the uninformative
    [0, 1]): callers must look at ``requests`` (or the bounds) before concluding anything.
    """

    errors: int
    requests: int
    value: float
    lower: float
    upper: float


def ratio(errors: int, requests: int, z: float = DEFAULT_Z) -> Ratio:
    """Build a :class:`Ratio` with its Wilson interval (see :func:`wilson_interval`)."""
    lower, upper = wilson_interval(errors, requests, z)
    value = errors / requests if requests else 0.0
    return Ratio(errors=errors, requests=requests, value=value, lower=lower, upper=upper)
