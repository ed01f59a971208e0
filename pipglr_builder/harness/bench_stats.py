"""bench, arithmetic: summaries, the order of paired samples and paired ratios (unit-tested).

A comparison (nested against the user's own podman, nested runner against
baseline runner) takes its samples pair by pair, one of each side per pair,
the order swapped every pair (A B, B A, A B, ...): whatever drifts on the
machine during the run (page cache, writeback, other load) lands on both
sides alike instead of on whichever side ran in its own block. Its ratio is
the median of the per-pair ratios, with their spread and the number of pairs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from ..errors import PipglrError


def summary(samples: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(samples), 3), "min": round(min(samples), 3),
            "max": round(max(samples), 3), "runs": len(samples)}


def pair_orders(pairs: int, sides: tuple[str, str]) -> list[tuple[str, str]]:
    """The order of the two samples of each pair: A B, B A, A B, ... (each side goes first in half the pairs)."""
    a, b = sides
    return [(a, b) if i % 2 == 0 else (b, a) for i in range(pairs)]


def alternate(pairs: int, sides: tuple[str, str], sample: Callable[[str], float],
              before: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """PAIRS samples of each side, taken pair by pair in pair_orders: {side: [sample of pair 0, 1, ...]}.
    BEFORE(pair index) runs before each pair (e.g. to say progress)."""
    samples: dict[str, list[float]] = {side: [] for side in sides}
    for i, order in enumerate(pair_orders(pairs, sides)):
        if before is not None:
            before(i)
        for side in order:
            samples[side].append(sample(side))
    return samples


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """The median of the per-pair ratios numerator[i] / denominator[i], with min, max, quartiles, the number of
    pairs and every per-pair ratio in the order taken (in bench.json: drift or two modes show there)."""
    if not numerator or len(numerator) != len(denominator):
        raise PipglrError(f"bench: a paired ratio needs as many samples on each side, not {len(numerator)} "
                          f"and {len(denominator)}")
    if any(d <= 0 for d in denominator):
        raise PipglrError(f"bench: a paired ratio's denominator must be positive: {list(denominator)}")
    ratios = [n / d for n, d in zip(numerator, denominator, strict=True)]
    q1, q3 = quartiles(ratios)
    return {**summary(ratios), "q1": round(q1, 3), "q3": round(q3, 3), "pairs": len(ratios),
            "per_pair": [round(r, 3) for r in ratios]}


def quartiles(samples: Sequence[float]) -> tuple[float, float]:
    """First and third quartile (inclusive method: within min..max, exact for a single sample)."""
    if len(samples) == 1:
        return samples[0], samples[0]
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, q3
