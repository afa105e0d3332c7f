"""The study's claims as tables: the paper's published values beside our measurements, with a
verdict per row (:mod:`imp_jax.study.verdicts`).

The tables are pure functions of a :class:`Source` (what each setting measured, as
:class:`Measured`) and the published values (``paper_values.json``): the reproduction feeds
them the finished sweeps of a scale (:mod:`imp_jax.study.reproduce`), and a test feeds them the
paper's own numbers, which must match wherever they can be compared.

How a row is judged:

* a number that depends on the setting (a test error, an ECE, a weight count) is ``reference
  only`` when our setting differs from the paper's in a results-determining field (fewer
  examples or epochs, another width, another output-layer rule; not the replicate count or the
  pruning grid), and the row says which;
* directions (best pruned lower than full), spreads and ratios are scale-free and judged at
  every scale;
* architecture weight counts are checks of our own plumbing, never counted;
* extensions (our measures the paper prints no value for, and settings it makes no claim at)
  carry their own verdicts and are not counted.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from imp_jax.study import verdicts as v
from imp_jax.study.verdicts import Verdict

PAPER_FILE = Path(__file__).with_name("paper_values.json")
CLAIMS = {
    "sdd": "1. Sparse double descent on MNIST (two-layer FCN, P=300, 20% label noise)",
    "widths": "2. Best pruned sizes are comparable across widths (MNIST, 20% label noise)",
    "mixtures": "3. The effective number of parameters reflects task difficulty (mixtures)",
    "uncertainty": "4. Pruned models capture the true p(y|x) better (mixtures)",
    "calibration": "5. Calibration on real data: ECE of the full and the best pruned network",
}
Paper = Mapping[tuple[str, str, str], Mapping[str, Any]]
Levels = Mapping[str, Sequence[float]]  # metric -> its value per replicate, replicates in order


def paper_values(path: Path = PAPER_FILE) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The published values, by ``(claim, setting, quantity)``: each ``{"value", "kind",
    "source"}`` and ``"derived": true`` where the value follows from the text."""
    entries = json.loads(path.read_text())["values"]
    return {(e["claim"], e["setting"], e["quantity"]): e for e in entries}


@dataclasses.dataclass(frozen=True)
class Measured:
    """One setting of the study as the claims compare it.

    Attributes:
      replicates: how many replicates its values have.
      total_weights: kernel weights of the full network.
      levels: per landmark (``"dense"``, ``"peak"``, ``"best"``) the replicates' metrics at
        that level of the mean test-error curve; None where the curve has no such landmark.
      weights: the remaining weights at each landmark (None where it has none).
      why_no_best: why there is no best pruned model ("" when there is one).
      cuts: the results-determining fields in which the setting differs from the paper's, as
        ``field paper -> ours`` (empty at the paper's setting).
      grid: the pruning grid's step, 1 / (1 - prune.fraction): a count's resolution.
      num_bins: the ECE bin count of its metrics' names.
      peak_measured: False where the peak is not known (the paper prints none).
    """

    replicates: int
    total_weights: int
    levels: Mapping[str, Levels | None]
    weights: Mapping[str, int | None]
    why_no_best: str = ""
    cuts: tuple[str, ...] = ()
    grid: float = 1.25
    num_bins: int = 15
    peak_measured: bool = True

    def at(self, landmark: str, metric: str) -> Sequence[float] | None:
        """The replicates' ``metric`` at ``landmark``, or None."""
        level = self.levels.get(landmark)
        return None if level is None else level.get(metric)


class Source(Protocol):
    """What the tables read: the measured settings of each sweep, by their swept values."""

    def ran(self, key: str) -> bool:
        """Whether sweep ``key`` is part of this scale."""

    def settings(self, key: str) -> list[tuple[dict[str, float], Measured]]:
        """Sweep ``key``'s measured settings: (swept values, measurement), in sweep order."""


def get(source: Source, key: str, **values: float) -> Measured | None:
    """The measurement of the setting of ``key`` with ``values``, or None."""
    return next((m for vals, m in source.settings(key)
                 if all(vals.get(k) == x for k, x in values.items())), None)


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a claim's table.

    ``mean``/``std``/``n`` are the number judged (a difference for a direction); ``paper_value``
    the published number where there is one. ``extension`` rows are ours beyond the paper's
    claim: judged, never counted. ``sweep`` names the sweep read (rows of a sweep not run at a
    scale are shown as one line).
    """

    setting: str
    quantity: str
    paper: str
    ours: str
    verdict: Verdict
    mean: float | None = None
    std: float | None = None
    n: int | None = None
    paper_value: float | None = None
    extension: bool = False
    sweep: str = ""
    source: str = ""

    @property
    def counted(self) -> bool:
        """A result: matches or differs, and not an extension."""
        return self.verdict.counted and not self.extension


@dataclasses.dataclass(frozen=True)
class Table:
    """One claim's section of the report: its rows and headline."""

    claim: str
    rows: list[Row]
    headline: str = ""

    @property
    def title(self) -> str:
        return CLAIMS[self.claim]

    def counts(self) -> dict[str, int]:
        """Rows per verdict word (extensions, checks and reference rows as "not counted")."""
        out = {w: sum(r.verdict.word == w and not r.extension for r in self.rows)
               for w in v.WORDS}
        out["not counted"] = len(self.rows) - sum(out.values())
        return out


# ---------------------------------------------------------------------------------------------
# Formatting.


def fmt_count(value: float | None) -> str:
    """A weight count as the paper prints it (``238 200``)."""
    return "–" if value is None else f"{round(value):,}".replace(",", " ")


def fmt_values(values: Sequence[float] | None, digits: int = 3) -> str:
    """``mean ± std`` over replicates (sample std)."""
    if values is None:
        return "–"
    a = np.asarray(values, np.float64)
    return f"{a.mean():.{digits}f} ± {(a.std(ddof=1) if a.size > 1 else 0.0):.{digits}f}"


def fmt_paper(entry: Mapping[str, Any] | None) -> str:
    """A published value as the report prints it."""
    if entry is None:
        return "–"
    value, kind = entry["value"], entry["kind"]
    if kind == "count":
        return fmt_count(value)
    if kind == "range":
        return f"{fmt_count(value[0])}-{fmt_count(value[1])}"
    if kind == "ratio":
        return f"about {value:g}x"
    if kind in ("direction", "shape", "positive"):
        return str(value)
    return f"{value:.3f}"


def _stats(values: Sequence[float] | None) -> dict[str, Any]:
    if values is None:
        return {}
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "n": int(a.size)}


def _scaled(m: Measured, verdict: Verdict) -> Verdict:
    """``verdict`` on a number that depends on the setting: reference only where ours differs
    from the paper's."""
    if m.cuts and verdict.counted:
        return Verdict(v.REFERENCE, "our setting differs: " + "; ".join(m.cuts))
    return verdict


def _not_run(setting: str, quantity: str, entry: Mapping[str, Any] | None, key: str,
             extension: bool = False) -> Row:
    return Row(setting, quantity, fmt_paper(entry), "–", Verdict(v.NOT_RUN), sweep=key,
               extension=extension, source=entry["source"] if entry else "")


def _no_best(m: Measured) -> Verdict:
    return Verdict(v.UNDETERMINED, f"no best pruned model ({m.why_no_best})")


# ---------------------------------------------------------------------------------------------
# Rows shared by the claims.


def direction_row(setting: str, quantity: str, entry: Mapping[str, Any] | None,
                  m: Measured | None, key: str, metric: str, *, high: str = "dense",
                  low: str = "best", extension: bool = False) -> Row:
    """Whether ``metric`` is lower at ``low`` than at ``high`` (landmarks), paired over the
    replicates."""
    if m is None:
        return _not_run(setting, quantity, entry, key, extension)
    names = {"dense": "full", "best": "best pruned", "peak": "peak"}
    a, b = m.at(high, metric), m.at(low, metric)
    source = entry["source"] if entry else "extension: the paper prints no value"
    if a is None or b is None:
        verdict = _no_best(m) if m.levels.get("best") is None else Verdict(
            v.UNDETERMINED, f"no {metric} in the rows")
        return Row(setting, quantity, fmt_paper(entry), "–", verdict, extension=extension,
                   sweep=key, source=source)
    difference = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    ours = (f"{names[high]} {fmt_values(a)}, {names[low]} {fmt_values(b)}; difference "
            f"{fmt_values(difference)}")
    return Row(setting, quantity, fmt_paper(entry), ours,
               v.lower(a, b, what=names[low]), **_stats(difference), extension=extension,
               sweep=key, source=source)


def value_row(setting: str, quantity: str, entry: Mapping[str, Any], m: Measured | None,
              key: str, metric: str, landmark: str) -> Row:
    """Our replicates' ``metric`` at ``landmark`` against the paper's value."""
    if m is None:
        return _not_run(setting, quantity, entry, key)
    values = m.at(landmark, metric)
    if values is None:
        return Row(setting, quantity, fmt_paper(entry), "–", _no_best(m), sweep=key,
                   paper_value=entry["value"], source=entry["source"])
    verdict = _scaled(m, v.value(entry["value"], values, entry["kind"]))
    return Row(setting, quantity, fmt_paper(entry), fmt_values(values), verdict,
               **_stats(values), paper_value=entry["value"], sweep=key, source=entry["source"])


def fcn_weights(widths: Sequence[int], inputs: int = 784, classes: int = 10) -> int:
    """Kernel weights of an FCN ``inputs``-widths-``classes``."""
    sizes = [inputs, *widths, classes]
    return sum(a * b for a, b in itertools.pairwise(sizes))


def network_rows(paper: Paper, key: str, network: str, hidden: Sequence[int],
                 m: Measured | None) -> list[Row]:
    """One network of the study's table: its full weights (a check), its best pruned weights
    and test errors, full and pruned (where the paper gives them)."""
    setting = f"{network} P={hidden[0]}"
    entries = {q: paper.get(("widths", setting, q)) for q in (
        "full weights", "best pruned weights", "test error (full)", "test error (pruned)")}
    if m is None:
        return [_not_run(setting, q, e, key) for q, e in entries.items()
                if e is not None or "weights" in q]
    expected = fcn_weights(hidden)
    full = entries["full weights"]
    rows = [Row(setting, "full weights", fmt_paper(full), fmt_count(m.total_weights),
                v.check_equal(expected if full is None else full["value"], m.total_weights),
                mean=m.total_weights, n=m.replicates, sweep=key,
                paper_value=None if full is None else full["value"],
                source=full["source"] if full else f"architecture 784-{'-'.join(map(str, hidden))}"
                                                   f"-10 (kernel weights)")]
    best = entries["best pruned weights"]
    per = _stats([float(w) for w in m.at("best", "remaining_weights") or []] or None)
    ours = (fmt_count(m.weights["best"]) if m.weights.get("best") is not None
            else f"none ({m.why_no_best})")
    verdict = (_no_best(m) if m.weights.get("best") is None else
               _scaled(m, v.count(best["value"], m.weights["best"])) if best else
               Verdict(v.UNDETERMINED, "no published value"))
    rows.append(Row(setting, "best pruned weights", fmt_paper(best), ours, verdict,
                    mean=m.weights.get("best"), std=per.get("std"), n=m.replicates, sweep=key,
                    paper_value=best["value"] if best else None,
                    source=best["source"] if best else "", extension=best is None))
    for quantity, landmark in (("test error (full)", "dense"), ("test error (pruned)", "best")):
        if entries[quantity] is not None:
            rows.append(value_row(setting, quantity, entries[quantity], m, key, "test_error",
                                  landmark))
    return rows


# ---------------------------------------------------------------------------------------------
# The claims.


def sdd_table(src: Source, paper: Paper) -> Table:
    """Claim 1: the two-layer P=300 network's double descent: a rise above the dense error to
    a peak, then a fall below it to the best pruned model; its errors beside the paper's."""
    key, setting = "mnist_widths", "two-layer P=300"
    m = get(src, key, width=300) if src.ran(key) else None
    rows = network_rows(paper, key, "two-layer", (300,), m)
    shape = ("sdd", setting, "double descent: a peak above the dense error, then a minimum "
                             "below it")
    rows.append(_shape_row(shape[2], paper.get(shape), m, key))
    fall = "test error fall, full to best pruned"
    rows.append(direction_row(setting, fall, paper.get(("sdd", setting, fall)), m, key,
                              "test_error"))
    headline = "" if m is None else (
        f"P=300: test error {fmt_values(m.at('dense', 'test_error'))} full, "
        f"{fmt_values(m.at('peak', 'test_error'))} at the peak, "
        f"{fmt_values(m.at('best', 'test_error'))} best pruned "
        f"({fmt_count(m.weights.get('best'))} of {fmt_count(m.total_weights)} weights)")
    return Table("sdd", rows, headline)


def _shape_row(quantity: str, entry: Mapping[str, Any] | None, m: Measured | None,
               key: str) -> Row:
    setting = "two-layer P=300"
    if m is None:
        return _not_run(setting, quantity, entry, key)
    source = entry["source"] if entry else ""

    def point(landmark: str) -> str:
        return (f"{landmark} {fmt_values(m.at(landmark, 'test_error'))} "
                f"({fmt_count(m.weights.get(landmark))} weights)")

    if m.levels.get("best") is None:
        verdict = (Verdict(v.DIFFERS, m.why_no_best) if "only hurt" in m.why_no_best
                   else _no_best(m))
        return Row(setting, quantity, fmt_paper(entry), point("dense"), verdict, sweep=key,
                   source=source)
    if not m.peak_measured:
        return Row(setting, quantity, fmt_paper(entry), point("best"),
                   Verdict(v.UNDETERMINED, "no peak measured"), sweep=key, source=source)
    if m.levels.get("peak") is None:
        return Row(setting, quantity, fmt_paper(entry), f"{point('dense')} -> {point('best')}",
                   Verdict(v.DIFFERS, "no peak: the error fell from the dense network at once "
                                      "(a single descent)"), sweep=key, source=source)
    dense, peak = m.at("dense", "test_error"), m.at("peak", "test_error")
    rise, fall = v.lower(peak, dense, what="dense"), v.lower(dense, m.at("best", "test_error"))
    failed = [f"{name}: {verdict.detail}" for name, verdict in (("rise", rise), ("fall", fall))
              if verdict.word != v.MATCHES]
    verdict = (Verdict(v.MATCHES) if not failed else
               Verdict(v.UNDETERMINED if any(x.word == v.UNDETERMINED for x in (rise, fall))
                       else v.DIFFERS, "; ".join(failed)))
    return Row(setting, quantity, fmt_paper(entry),
               f"{point('dense')} -> {point('peak')} -> {point('best')}", verdict, sweep=key,
               source=source)


_NETWORKS = (("mnist_widths", "two-layer", ()), ("mnist3_widths", "three-layer", (100,)))


def _widths(src: Source, paper: Paper, key: str, network: str) -> list[int]:
    published = {int(s.split("P=")[1]) for c, s, _ in paper
                 if c == "widths" and s.startswith(f"{network} P=")}
    ours = {int(vals["width"]) for vals, _ in src.settings(key)} if src.ran(key) else set()
    return sorted(published | ours)


def widths_table(src: Source, paper: Paper) -> Table:
    """Claim 2: every width of both MNIST networks in the study's table format, and the spread
    of the best pruned sizes over the widths that reached one, beside the paper's over the
    same widths and beside the spread of the full sizes."""
    rows, heads = [], []
    for key, network, rest in _NETWORKS:
        best, full = {}, {}
        for width in _widths(src, paper, key, network):
            m = get(src, key, width=width) if src.ran(key) else None
            rows += network_rows(paper, key, network, (width, *rest), m)
            if m is not None and m.weights.get("best") is not None:
                best[width], full[width] = m.weights["best"], m.total_weights
        row, head = _spread_row(paper, key, network, best, full, src.ran(key))
        rows.append(row)
        heads += [head] if head else []
    return Table("widths", rows, "; ".join(heads))


def _spread_row(paper: Paper, key: str, network: str, best: Mapping[int, int],
                full: Mapping[int, int], ran: bool) -> tuple[Row, str]:
    quantity = "best pruned weights, largest / smallest"
    sources = {paper[k]["source"] for k in paper
               if k[0] == "widths" and k[1].startswith(f"{network} P=")
               and k[2] == "best pruned weights"}
    source = "; ".join(sorted(sources)) + " (over the widths that reached one in ours)"
    if not ran:
        return Row(network, quantity, "–", "–", Verdict(v.NOT_RUN), sweep=key,
                   source=source), ""
    published = {w: paper[("widths", f"{network} P={w}", "best pruned weights")]["value"]
                 for w in best if ("widths", f"{network} P={w}", "best pruned weights") in paper}
    widths = ", ".join(map(str, published))
    if len(published) < 2:
        why = ("fewer than two widths reached a best pruned model" if len(best) < 2 else
               "the paper gives fewer than two of the widths that reached one")
        return Row(network, quantity, "–", "–", Verdict(v.UNDETERMINED, why), sweep=key,
                   source=source), ""
    ours = [best[w] for w in published]
    spread, theirs = max(ours) / min(ours), max(published.values()) / min(published.values())
    sizes = [full[w] for w in published]
    text = (f"{spread:.2f}x over P={widths} (best pruned {fmt_count(min(ours))}-"
            f"{fmt_count(max(ours))}; full sizes {max(sizes) / min(sizes):.1f}x apart)")
    row = Row(network, quantity, f"{theirs:.2f}x over the same widths", text,
              v.at_most(theirs, spread, v.COUNT_FACTOR, "spread"), mean=spread, n=len(ours),
              paper_value=theirs, sweep=key, source=source)
    return row, f"{network}: best pruned sizes {spread:.2f}x apart (paper {theirs:.2f}x)"


_TASKS = (("mixture_nu", "linear"), ("mixture_xor_nu", "XOR"))


def mixtures_table(src: Source, paper: Paper) -> Table:
    """Claim 3: the effective parameters of the linear and XOR mixtures per nu, and their
    ratio at equal nu judged within the pruning grid's step."""
    rows: list[Row] = []
    for key, task in _TASKS:
        entry = paper.get(("mixtures", task, "effective parameters"))
        derived = bool(entry and entry.get("derived"))
        if not src.ran(key):
            rows.append(_not_run(task, "effective parameters", entry, key, derived))
            continue
        for vals, m in src.settings(key):
            verdict = (_no_best(m) if m.weights.get("best") is None else
                       _scaled(m, v.in_range(entry["value"], m.weights["best"])))
            rows.append(Row(f"{task}, nu={vals['nu']:g}", "effective parameters",
                            fmt_paper(entry), fmt_count(m.weights.get("best")), verdict,
                            mean=m.weights.get("best"), n=m.replicates, extension=derived,
                            sweep=key, source=entry["source"]))
    entry = paper[("mixtures", "XOR / linear", "effective parameters ratio at equal nu")]
    found = []
    shared = [(vals["nu"], m) for vals, m in (src.settings("mixture_nu")
                                               if src.ran("mixture_nu") else [])
              if src.ran("mixture_xor_nu") and get(src, "mixture_xor_nu", nu=vals["nu"])]
    for nu, linear in shared:
        xor = get(src, "mixture_xor_nu", nu=nu)
        a, b = linear.weights.get("best"), xor.weights.get("best")
        grid = max(linear.grid, xor.grid)
        if a is None or b is None:
            verdict, ours, mean = _no_best(linear if a is None else xor), "–", None
        else:
            mean = b / a
            found.append(mean)
            verdict = v.ratio(entry["value"], mean, grid)
            ours = f"{mean:.2f}x ({fmt_count(b)} / {fmt_count(a)}; grid step {grid:.3g})"
        rows.append(Row(f"nu={nu:g}", "XOR / linear effective parameters", fmt_paper(entry),
                        ours, verdict, mean=mean, paper_value=entry["value"],
                        n=min(linear.replicates, xor.replicates), sweep="mixture_xor_nu",
                        source=entry["source"]))
    if not shared:
        rows.append(_not_run("equal nu", "XOR / linear effective parameters", entry,
                             "mixture_xor_nu"))
    headline = (f"XOR / linear at equal nu: {', '.join(f'{r:.2f}x' for r in found)}"
                if found else "")
    return Table("mixtures", rows, headline)


# The paper's two settings of claim 4 (its Fig. 5): task, sweep, nu.
UNCERTAINTY_SETTINGS = (("linear", "mixture_nu", 0.2), ("XOR", "mixture_xor_nu", 0.6))
_EXTENSIONS = (("99th percentile of |p - p*|: best pruned vs full", "true_abs_error_q99"),
               ("mean |p - p*|: best pruned vs full", "true_abs_error"),
               ("KL(p* || p): best pruned vs full", "true_kl"))


def uncertainty_table(src: Source, paper: Paper) -> Table:
    """Claim 4 at the paper's two settings (linear nu=0.2, XOR nu=0.6): calibration on fresh
    samples of the true distribution and the largest |p - p*| over them (its Fig. 5b, 5c);
    the mean |p - p*|, KL(p* || p) and other nu as extensions."""
    rows, heads = [], []
    for task, key, nu in UNCERTAINTY_SETTINGS:
        setting = f"{task} nu={nu:g}"
        m = get(src, key, nu=nu) if src.ran(key) else None

        def entry(quantity: str, setting: str = setting) -> Mapping[str, Any] | None:
            return paper.get(("uncertainty", setting, quantity))

        bins = m.num_bins if m else 15
        q = "fresh-sample ECE: best pruned vs full"
        rows.append(direction_row(setting, q, entry(q), m, key, f"fresh_ece_{bins}"))
        q = "fresh-sample overconfidence (full)"
        rows.append(_positive_row(setting, q, entry(q), m, key, "fresh_overconfidence"))
        for q, landmark in (("largest |p - p*| (full)", "dense"),
                            ("largest |p - p*| (best pruned)", "best")):
            rows.append(value_row(setting, q, entry(q), m, key, "true_abs_error_max", landmark))
        q = "largest |p - p*|: best pruned vs full"
        rows.append(direction_row(setting, q, entry(q), m, key, "true_abs_error_max"))
        rows += [direction_row(setting, q, None, m, key, metric, extension=True)
                 for q, metric in _EXTENSIONS]
        if m is not None and m.at("best", "true_abs_error_max") is not None:
            heads.append(f"{setting}: largest |p - p*| "
                         f"{fmt_values(m.at('dense', 'true_abs_error_max'), 2)} full -> "
                         f"{fmt_values(m.at('best', 'true_abs_error_max'), 2)} best pruned")
        others = [(vals, o) for vals, o in (src.settings(key) if src.ran(key) else [])
                  if vals["nu"] != nu]
        for vals, other in others:
            rows += [direction_row(f"{task} nu={vals['nu']:g} (not a setting of the claim)",
                                   q, None, other, key, metric, extension=True)
                     for q, metric in _EXTENSIONS[1:]]
    return Table("uncertainty", rows, "; ".join(heads))


def _positive_row(setting: str, quantity: str, entry: Mapping[str, Any] | None,
                  m: Measured | None, key: str, metric: str) -> Row:
    if m is None:
        return _not_run(setting, quantity, entry, key)
    values = m.at("dense", metric)
    source = entry["source"] if entry else ""
    if values is None:
        return Row(setting, quantity, fmt_paper(entry), "–",
                   Verdict(v.UNDETERMINED, f"no {metric} in the rows"), sweep=key,
                   source=source)
    return Row(setting, quantity, fmt_paper(entry), fmt_values(values),
               v.positive(values, "mean confidence - accuracy"), **_stats(values), sweep=key,
               source=source)


# (sweep, width, the paper's name of the setting, what the setting names that the paper does
# not state).
CALIBRATION_SETTINGS = (
    ("mnist_widths", 300, "MNIST two-layer P=300",
     "the paper does not state the width behind its ECE values; P=300 is the reference "
     "code's README command, mnist_lenet_300"),
    ("cifar10", 80, "CIFAR-10 ResNet-20",
     "the paper's 'ResNet-18' is the reference code's CIFAR ResNet-20; W=80 is its README "
     "command, cifar_resnet_20_80"),
)


def calibration_table(src: Source, paper: Paper) -> Table:
    """Claim 5: ECE against clean and noisy test labels of the full and the best pruned
    network, and its direction (higher on clean labels, lower on noisy ones)."""
    rows, heads = [], []
    for key, width, setting, note in CALIBRATION_SETTINGS:
        m = get(src, key, width=width) if src.ran(key) else None
        bins = m.num_bins if m else 15
        shown = f"{setting} ({note})"
        for labels, prefix in (("clean", "test"), ("noisy", "test_noisy")):
            metric = f"{prefix}_ece_{bins}"
            for landmark, name in (("dense", "full"), ("best", "best pruned")):
                q = f"ECE, {labels} test labels ({name})"
                row = value_row(setting, q, paper[("calibration", setting, q)], m, key, metric,
                                landmark)
                rows.append(dataclasses.replace(row, setting=shown))
            q = f"ECE, {labels} test labels: best pruned vs full"
            entry = paper[("calibration", setting, q)]
            high, low = ("best", "dense") if "higher" in entry["value"] else ("dense", "best")
            row = direction_row(shown, q, entry, m, key, metric, high=high, low=low)
            rows.append(row)
            if labels == "noisy" and m is not None:
                heads.append(f"{setting}: noisy-label ECE {fmt_values(m.at('dense', metric))} "
                             f"full -> {fmt_values(m.at('best', metric))} best pruned")
    return Table("calibration", rows, "; ".join(heads))


TABLES: dict[str, Callable[[Source, Paper], Table]] = {
    "sdd": sdd_table, "widths": widths_table, "mixtures": mixtures_table,
    "uncertainty": uncertainty_table, "calibration": calibration_table}


def tables(src: Source, claims: Sequence[str], paper: Paper | None = None) -> list[Table]:
    """The tables of ``claims`` (keys of :data:`CLAIMS`), in that order."""
    paper = paper_values() if paper is None else paper
    return [TABLES[c](src, paper) for c in claims]
