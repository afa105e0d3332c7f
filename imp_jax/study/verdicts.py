"""Verdicts of the reproduction: one of our measurements against a published value or claim.

A verdict is a word and a detail. Four words are results or their absence:

* ``matches`` and ``differs`` (by how much, in which direction): the only ones counted;
* ``undetermined``: this scale cannot decide it (no best pruned model reached, one replicate,
  ...), and the detail says which;
* ``not run at this scale``.

Two more are shown and never counted: ``check`` (our own plumbing, e.g. an architecture's
weight count: ``ok`` or ``fails``) and ``reference only`` (a setting that differs from the
paper's in a results-determining way, compared with a number that depends on it).

Windows: a weight count within :data:`COUNT_FACTOR`; an error, ECE or probability within the
larger of a floor and two standard errors (std / sqrt(n)) of ours, never wider than a cap
(:data:`WINDOWS`); a direction ("lower for best pruned") from the per-replicate differences
where the two values come from the same replicates (paired), beyond the larger of
:data:`DIRECTION_FLOOR` and two standard errors of the mean difference.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

MATCHES = "matches"
DIFFERS = "differs"
UNDETERMINED = "undetermined"
NOT_RUN = "not run at this scale"
CHECK = "check"
REFERENCE = "reference only"
# The words of results and of their absence, in the order the summary counts them.
WORDS = (MATCHES, DIFFERS, UNDETERMINED, NOT_RUN)
COUNTED = (MATCHES, DIFFERS)

# Two of the study's 20% pruning levels (1.25^2): a best pruned count lies on a grid of levels.
COUNT_FACTOR = 1.25 ** 2


@dataclasses.dataclass(frozen=True)
class Window:
    """How far a value may lie from the paper's and match: at least ``floor``, two standard
    errors of ours where they are larger, never more than ``cap``."""

    floor: float
    cap: float

    def width(self, values: Sequence[float]) -> float:
        """The window around the paper's value for our replicates' ``values``."""
        return min(self.cap, max(self.floor, 2 * standard_error(values)))


WINDOWS = {"error": Window(0.02, 0.04), "ece": Window(0.03, 0.05),
           "probability": Window(0.05, 0.10)}
DIRECTION_FLOOR = 0.002


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A verdict word (:data:`WORDS`, :data:`CHECK` or :data:`REFERENCE`) and its detail."""

    word: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.word}: {self.detail}" if self.detail else self.word

    @property
    def counted(self) -> bool:
        """Whether it is a result (matches or differs)."""
        return self.word in COUNTED


def standard_error(values: Sequence[float]) -> float:
    """std / sqrt(n) (sample std); 0 for fewer than two values."""
    v = np.asarray(values, np.float64)
    return float(np.std(v, ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0


def count(paper: float, ours: float) -> Verdict:
    """A best pruned weight count against the paper's, within :data:`COUNT_FACTOR`."""
    ratio = ours / paper
    if 1 / COUNT_FACTOR <= ratio <= COUNT_FACTOR:
        return Verdict(MATCHES)
    return Verdict(DIFFERS, f"ours {ratio:.2f}x the paper's "
                            f"({'more' if ratio > 1 else 'fewer'} weights)")


def check_equal(expected: float, ours: float) -> Verdict:
    """A check of our own plumbing: ``ours`` must equal ``expected``."""
    return Verdict(CHECK, "ok" if ours == expected else f"fails: {ours:g}, expected {expected:g}")


def value(paper: float, ours: Sequence[float], kind: str) -> Verdict:
    """Our replicates' values of an error, ECE or probability against the paper's value
    (:data:`WINDOWS` of ``kind``)."""
    mean, window = float(np.mean(ours)), WINDOWS[kind].width(ours)
    difference = mean - paper
    if abs(difference) <= window:
        return Verdict(MATCHES)
    return Verdict(DIFFERS, f"ours {abs(difference):.3f} {'higher' if difference > 0 else 'lower'}"
                            f" (window {window:.3f})")


def in_range(paper: Sequence[float], ours: float) -> Verdict:
    """A count against a published range, widened by :data:`COUNT_FACTOR`."""
    lo, hi = paper
    if lo / COUNT_FACTOR <= ours <= hi * COUNT_FACTOR:
        return Verdict(MATCHES)
    return Verdict(DIFFERS, f"ours {ours / hi:.2f}x the range's top" if ours > hi else
                            f"ours {lo / ours:.2f}x below the range's bottom")


def ratio(paper: float, ours: float, factor: float) -> Verdict:
    """A ratio against the paper's, within ``factor`` either way (e.g. the pruning grid's step,
    the resolution of a ratio of two counts on it)."""
    if paper / factor <= ours <= paper * factor:
        return Verdict(MATCHES)
    return Verdict(DIFFERS, f"ours {ours:.2f}x, {'above' if ours > paper else 'below'} the "
                            f"paper's {paper:g}x by more than the factor {factor:.3g}")


def at_most(paper: float, ours: float, factor: float, what: str) -> Verdict:
    """A spread no larger than the paper's (within ``factor``): "comparable" is one-sided."""
    if ours <= paper * factor:
        return Verdict(MATCHES)
    return Verdict(DIFFERS, f"ours {ours / paper:.2f}x the paper's {what}")


def lower(higher: Sequence[float], low: Sequence[float], *, paired: bool = True,
          what: str = "best pruned") -> Verdict:
    """Whether ``low`` is lower than ``higher``: per replicate (``paired``; the two sequences
    in replicate order) or by their means (the larger std as the tolerance)."""
    a, b = np.asarray(higher, np.float64), np.asarray(low, np.float64)
    if paired and a.size != b.size:
        raise ValueError(f"paired values need equal counts, got {a.size} and {b.size}")
    if min(a.size, b.size) < 2:
        return Verdict(UNDETERMINED, "fewer than two replicates")
    difference = float(np.mean(a - b)) if paired else float(np.mean(a) - np.mean(b))
    spread = (2 * standard_error(a - b) if paired else
              max(float(np.std(a, ddof=1)), float(np.std(b, ddof=1))))
    tolerance = max(DIRECTION_FLOOR, spread)
    if difference > tolerance:
        return Verdict(MATCHES)
    if difference < -tolerance:
        return Verdict(DIFFERS, f"{what} {-difference:.3g} higher, not lower")
    return Verdict(DIFFERS, f"no clear difference ({difference:+.3g}, tolerance {tolerance:.3g})")


def positive(values: Sequence[float], what: str) -> Verdict:
    """Whether the mean of ``values`` is above zero by more than the tolerance."""
    v = np.asarray(values, np.float64)
    if v.size < 2:
        return Verdict(UNDETERMINED, "fewer than two replicates")
    mean, tolerance = float(np.mean(v)), max(DIRECTION_FLOOR, 2 * standard_error(v))
    if mean > tolerance:
        return Verdict(MATCHES)
    return Verdict(DIFFERS, f"{what} {mean:+.3g} (tolerance {tolerance:.3g})")
