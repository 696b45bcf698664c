"""Confidence intervals for the proportions the grid reports (accuracy under attack).

Wilson score interval (Wilson 1927, "Probable inference, the law of succession, and
statistical inference", JASA 22): unlike the normal approximation it stays inside [0, 1] and
behaves at k = 0 or k = n, which matters here because accuracy under attack is often near 0.
Difference of two independent proportions: Newcombe's hybrid score interval (method 10 of
Newcombe 1998, "Interval estimation for the difference between independent proportions",
Statistics in Medicine 17), built from the two Wilson intervals."""
from __future__ import annotations

import math

from ser_core.errors import ParameterError

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (95 % by default)."""
    if n < 0 or k < 0 or k > n:
        raise ParameterError(f"wilson: k={k}, n={n} (accepted: 0 <= k <= n)")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # at k = 0 (k = n) the bound is exactly 0 (1); the closed form leaves a rounding residue
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def newcombe_difference(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """(p1 - p2, low, high): Newcombe's hybrid score interval for the difference of two
    independent proportions. An interval excluding 0 means the two differ at that level."""
    if n1 == 0 or n2 == 0:
        return (0.0, -1.0, 1.0)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (d, max(-1.0, low), min(1.0, high))


def wilson_half_width(n: int, z: float = Z95) -> float:
    """The widest half-width a 95 % Wilson interval on n examples can have (at k = n / 2):
    what n guarantees whatever the accuracy turns out to be."""
    if n < 1:
        return 0.5
    return max((hi - lo) / 2 for lo, hi in (wilson(n // 2, n, z), wilson((n + 1) // 2, n, z)))


def wilson_size(margin: float, z: float = Z95) -> int:
    """The fewest examples whose 95 % Wilson interval is within +/- `margin` at any accuracy."""
    if not 0 < margin < 0.5:
        raise ParameterError(f"wilson_size: margin={margin!r} (accepted: 0 < margin < 0.5)")
    n = max(1, int((z / (2 * margin)) ** 2 - z * z) - 1)  # just under the closed-form root
    while wilson_half_width(n, z) > margin:
        n += 1
    return n
