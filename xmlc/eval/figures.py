"""Diagnostic figures: where a multilabel model over-predicts, how calibrated it is, where it fails.

Every figure is built from per-label arrays a run already holds (validation scores, label
counts, thresholds), never from a second pass over the data, and is vectorised over labels:
one matplotlib call per colour group, no Python loop over labels. Figures are
``matplotlib.figure.Figure`` objects drawn with the Agg canvas; nothing here touches
``pyplot`` or its global state, so a training loop or a notebook can build them freely.

    ==============================  ==========================================================
    :func:`predicted_vs_true`       per label, predicted positives against true positives
                                    (log-log, one dot per label, the diagonal; one panel per
                                    set of thresholds, e.g. 0.5 and calibrated)
    :func:`reliability`             binned mean predicted probability against the observed
                                    frequency, with the counts per bin; optionally also after
                                    the ln(pos_weight) logit correction
    :func:`ap_by_frequency`         per-label average precision against training positives,
                                    with the head / torso / tail means
    :func:`long_tail`               positives per label sorted (log scale), with the
                                    neg/pos ``pos_weight`` scale and range
    ==============================  ==========================================================

:func:`run_figures` builds the first three from one validation pass (what ``xmlc.train``
logs), :func:`to_png` / :func:`save_png` render them.

Zero counts on log axes (an explicit policy, the same in every figure): a count of 0 is drawn
at 0.5, on a dotted line whose tick reads "0", so labels never predicted (or never seen) stay
visible instead of silently falling off the axis. Reliability bins with no positive at all
(observed frequency 0, -inf on the logit axis) are drawn as open triangles on the bottom edge,
bins holding only positives (frequency 1, +inf) as open triangles on the top edge.
Labels whose average precision is undefined (no validation positive) are left out of
:func:`ap_by_frequency` and counted in its legend.

References:
    * Reliability diagrams: M. H. DeGroot, S. E. Fienberg, "The Comparison and Evaluation of
      Forecasters", The Statistician 1983; A. Niculescu-Mizil, R. Caruana, "Predicting Good
      Probabilities with Supervised Learning", ICML 2005.
    * The ln(pos_weight) shift of weighted BCE: :mod:`xmlc.eval.calibrate` (method "prior").

Example:
    >>> import numpy as np
    >>> true = np.array([10, 100, 3, 0]); buckets = np.array([1, 0, 2, 2])
    >>> fig = predicted_vs_true(true, {"at 0.5": 2 * true, "calibrated": true}, buckets)
    >>> len(to_png(fig)) > 0
    True
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from xmlc.eval.inputs import eval_inputs
from xmlc.eval.metrics import average_precision, predicted_counts
from xmlc.stats import BUCKET_NAMES, pos_weight_from_counts

__all__ = [
    "predicted_counts",
    "ReliabilityBins",
    "reliability_bins",
    "predicted_vs_true",
    "reliability",
    "ap_by_frequency",
    "long_tail",
    "run_figures",
    "to_png",
    "save_png",
    "FIGURE_NAMES",
]

FIGURE_NAMES = ("predicted_vs_true", "reliability", "ap_by_frequency")
BUCKET_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c")   # head, torso, tail
ZERO_AT = 0.5           # where a count of 0 is drawn on a log axis
_ROW_CHUNK = 1024       # rows of (N, L) scores per block (bounded temporaries)
_LOGIT_RANGE = 12.0     # reliability bins span logits [-12, 12]; the end bins are open
_PLAIN = FuncFormatter(lambda v, _: f"{v:g}")   # tick labels as plain numbers (no mathtext)
_LOGIT_TICKS = (1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999)


# ---------------------------------------------------------------------------------------
# Arrays


@dataclass
class ReliabilityBins:
    """Per bin of predicted probability: cells, positives among them, sum of their scores.

    ``edges`` (B + 1,) are probabilities; the first and last bins are open (they also hold
    the scores below / above the outer edges).
    """

    edges: np.ndarray
    count: np.ndarray
    positives: np.ndarray
    score_sum: np.ndarray

    @property
    def mean_score(self) -> np.ndarray:
        """Mean predicted probability per bin (NaN for empty bins)."""
        return np.divide(self.score_sum, self.count, out=np.full(self.count.shape, np.nan),
                         where=self.count > 0)

    @property
    def frequency(self) -> np.ndarray:
        """Observed positive frequency per bin (NaN for empty bins)."""
        return np.divide(self.positives, self.count, out=np.full(self.count.shape, np.nan),
                         where=self.count > 0)


def reliability_bins(scores, targets, *, num_bins: int = 24, pos_weight=None,
                     max_cells: int | None = 1 << 22) -> ReliabilityBins:
    """Bin the cells of ``scores`` by predicted probability; count cells and positives per bin.

    Bins are equally wide in logit space over [-12, 12] (probabilities 6e-6 .. 1 - 6e-6), so
    the rare-positive end, where almost all cells of a many-label problem sit, is resolved as
    finely as the middle. A cell's bin comes from its logit directly (one ``logit``, one
    truncation; no search over the edges).

    Args:
        scores: ``(N, L)`` probabilities.
        targets: ``(N, L)`` {0,1} dense or scipy CSR.
        num_bins: number of bins B (>= 2).
        pos_weight: ``(L,)``; if given, each score is first corrected by the ln(pos_weight)
            logit shift, ``sigmoid(logit(p) - ln w)`` (see :func:`xmlc.eval.calibrate.prior_thresholds`).
        max_cells: cap on the cells binned, for speed: with ``N * L > max_cells`` only every
            k-th row is used (k the smallest stride that fits; deterministic). None: all rows.

    Returns:
        :class:`ReliabilityBins`.
    """
    if not (isinstance(num_bins, int) and num_bins >= 2):
        raise ValueError(f"num_bins must be an int >= 2, got {num_bins!r}")
    pos = eval_inputs(scores, targets, engine="numpy")
    s_np = pos.scores
    n, l = s_np.shape
    stride = 1 if max_cells is None or n * l <= max_cells else math.ceil(n * l / max(max_cells, l))
    s = torch.from_numpy(s_np[::stride])
    keep = pos.rows % stride == 0
    pos_rows, pos_cols = torch.from_numpy(pos.rows[keep] // stride), torch.from_numpy(pos.cols[keep])
    shift = None
    if pos_weight is not None:
        w = torch.as_tensor(pos_weight, dtype=torch.float32).detach().cpu()
        if w.shape != (l,) or not torch.all(w > 0):
            raise ValueError(f"pos_weight must be ({l},) and > 0, got shape {tuple(w.shape)}")
        shift = torch.log(w)
    scale = num_bins / (2 * _LOGIT_RANGE)

    def bin_of(p: torch.Tensor, cols: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(bin index, corrected probability) of probabilities ``p``; ``cols`` their labels."""
        z = torch.logit(p)
        if shift is not None:
            z = z - (shift if cols is None else shift[cols])
            p = torch.sigmoid(z)
        idx = z.add_(_LOGIT_RANGE).mul_(scale).clamp_(0, num_bins - 0.5).long()   # trunc = floor, >= 0
        return idx.flatten(), p.flatten()

    count = torch.zeros(num_bins, dtype=torch.int64)
    score_sum = torch.zeros(num_bins, dtype=torch.float64)
    for r0 in range(0, s.shape[0], _ROW_CHUNK):
        idx, p = bin_of(s[r0:r0 + _ROW_CHUNK], None)
        count += torch.bincount(idx, minlength=num_bins)
        score_sum += torch.bincount(idx, weights=p.double(), minlength=num_bins)   # float32 sums drift
    idx, _ = bin_of(s[pos_rows, pos_cols], pos_cols)
    positives = torch.bincount(idx, minlength=num_bins)
    edges = torch.sigmoid(torch.linspace(-_LOGIT_RANGE, _LOGIT_RANGE, num_bins + 1, dtype=torch.float64))
    return ReliabilityBins(edges.numpy(), count.numpy(), positives.numpy(), score_sum.numpy())


# ---------------------------------------------------------------------------------------
# Figures


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _as_np(x, dtype=np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _check_labels(name: str, x: np.ndarray, num_labels: int) -> None:
    if x.shape != (num_labels,):
        raise ValueError(f"{name} must have shape ({num_labels},), got {x.shape}")


def _bucket_colors(buckets: np.ndarray) -> np.ndarray:
    if buckets.size and (buckets.min() < 0 or buckets.max() >= len(BUCKET_NAMES)):
        raise ValueError(f"buckets must be in 0..{len(BUCKET_NAMES) - 1}, got values {np.unique(buckets)}")
    return np.asarray(BUCKET_COLORS)[buckets]


def _bucket_legend(ax, buckets: np.ndarray, extra=(), loc="upper left") -> None:
    handles = [Line2D([], [], ls="", marker="o", color=c, label=f"{n} ({int((buckets == b).sum()):,} labels)")
               for b, (n, c) in enumerate(zip(BUCKET_NAMES, BUCKET_COLORS))]
    ax.legend(handles=[*handles, *extra], loc=loc, fontsize=8, framealpha=0.9)


def _log_axis(ax, which: str, *arrays) -> None:
    """Log scale on ``ax``'s ``which`` ("x"/"y") axis for the counts in ``arrays``; 0 drawn at ``ZERO_AT``.

    Where some count is 0 the axis reaches down to ``ZERO_AT``, whose tick reads "0", with a
    dotted line there; otherwise it starts just below the smallest count. No minor ticks
    (they cost most of the drawing time of a log axis).
    """
    values = np.concatenate([np.ravel(a) for a in arrays])
    positive = values[values > 0]
    hi = max(float(positive.max()) if positive.size else 1.0, 1.0) * 1.6
    has_zero = bool((values <= 0).any())
    lo = ZERO_AT * 0.7 if has_zero or not positive.size else float(positive.min()) / 1.6
    axis, set_scale, set_limits, axis_line = ((ax.xaxis, ax.set_xscale, ax.set_xlim, ax.axvline) if which == "x"
                                              else (ax.yaxis, ax.set_yscale, ax.set_ylim, ax.axhline))
    set_scale("log")
    set_limits(lo, hi)
    subs = (1.0, 2.0, 5.0) if hi / max(lo, 1.0) < 300 else (1.0,)   # narrow ranges get 2s and 5s
    ticks = [t for t in LogLocator(subs=subs).tick_values(max(lo, 1.0), hi) if max(lo, 1.0) <= t <= hi]
    axis.set_ticks([ZERO_AT, *ticks] if has_zero else ticks,
                   labels=(["0"] if has_zero else []) + [f"{t:g}" for t in ticks])
    axis.set_minor_locator(NullLocator())
    if has_zero:
        axis_line(ZERO_AT, color="0.6", lw=0.8, ls=":")


def predicted_vs_true(true_counts, predicted: dict, buckets, *, title: str = "") -> Figure:
    """Predicted against true positives per label, log-log, one panel per set of decisions.

    Dots above the diagonal are labels the model predicts more often than they occur. Counts
    of 0 are drawn at 0.5 (the tick "0"; module docstring).

    Args:
        true_counts: ``(L,)`` positives per label in the evaluated split.
        predicted: ``{panel title: (L,) predicted positives}``, e.g. from
            :func:`predicted_counts` at 0.5 and at calibrated thresholds.
        buckets: ``(L,)`` 0 head, 1 torso, 2 tail (:func:`xmlc.stats.frequency_buckets`).
        title: figure title.
    """
    true = _as_np(true_counts)
    b = _as_np(buckets, np.int64)
    _check_labels("buckets", b, true.size)
    colors = _bucket_colors(b)
    panels = {name: _as_np(p) for name, p in predicted.items()}
    if not panels:
        raise ValueError("predicted must hold at least one (L,) array")
    for name, p in panels.items():
        _check_labels(f"predicted[{name!r}]", p, true.size)
    fig = _new_figure(5.0 * len(panels), 4.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    x = np.maximum(true, ZERO_AT)
    for ax, (name, p) in zip(axes, panels.items()):
        ax.scatter(x, np.maximum(p, ZERO_AT), s=5, c=colors, alpha=0.45, linewidths=0, rasterized=True)
        everything = [true, *panels.values()]   # the same limits on both axes and in every panel
        _log_axis(ax, "x", *everything)
        _log_axis(ax, "y", *everything)
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], color="k", lw=1)
        ratios = [p[b == i].sum() / true[b == i].sum() if true[b == i].sum() else math.nan
                  for i in range(len(BUCKET_NAMES))]
        total = p.sum() / true.sum() if true.sum() else math.nan
        ax.set_title(f"{name}: predicted / true = {total:.2f}\n"
                     + ", ".join(f"{n} {r:.2f}" for n, r in zip(BUCKET_NAMES, ratios)), fontsize=10)
        ax.set_xlabel("true positives per label")
        ax.set_ylabel("predicted positives per label")
        ax.grid(True, which="major", alpha=0.3)
        _bucket_legend(ax, b, extra=[Line2D([], [], color="k", lw=1, label="predicted = true")])
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def reliability(bins: dict, *, title: str = "") -> Figure:
    """Reliability diagram(s): observed frequency against mean predicted probability per bin.

    Logit scale on both axes (0.001 and 0.999 are as far from 0.5 as each other); the
    diagonal is perfect calibration, dots below it are over-confident scores. Under each
    diagram, the number of cells (and of positives) per bin, log scale.

    Args:
        bins: ``{panel title: ReliabilityBins}``, e.g. ``{"as trained": ...,
            "ln(pos_weight) corrected": ...}`` from :func:`reliability_bins`.
        title: figure title.
    """
    if not bins:
        raise ValueError("bins must hold at least one ReliabilityBins")
    fig = _new_figure(5.0 * len(bins), 6.0)
    axes = fig.subplots(2, len(bins), squeeze=False, height_ratios=(3, 1.3), sharex="col")
    for col, (name, rb) in enumerate(bins.items()):
        _reliability_panel(axes[0, col], axes[1, col], name, rb)
        _bin_counts_panel(axes[1, col], rb)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _reliability_panel(top, bottom, name: str, rb: ReliabilityBins) -> None:
    """The diagram of one :class:`ReliabilityBins` on ``top``; its logit ticks also on ``bottom``'s x axis."""
    filled = rb.count > 0
    x, y = rb.mean_score[filled], rb.frequency[filled]
    has_pos = y > 0
    seen = np.concatenate([x, y[has_pos & (y < 1)]])
    seen = seen[(seen > 0) & (seen < 1)]
    lo = float(np.clip(seen.min() / 3, 1e-6, 0.05)) if seen.size else 1e-3
    hi = float(1 - np.clip((1 - seen.max()) / 3, 1e-6, 0.05)) if seen.size else 1 - 1e-3
    top.plot([lo, hi], [lo, hi], color="k", lw=1, label="perfectly calibrated")
    inside = has_pos & (y < 1)
    top.plot(x[inside], y[inside], "o-", color="C3", ms=4, lw=1, label="observed frequency")
    # frequencies 0 and 1 are -inf / +inf on a logit axis: open triangles on the floor / ceiling
    if (~has_pos).any():
        top.plot(x[~has_pos], np.full((~has_pos).sum(), lo), "v", mfc="none", color="C3", ms=6,
                 label="bin without a positive")
    if (y >= 1).any():
        top.plot(x[y >= 1], np.full((y >= 1).sum(), hi), "^", mfc="none", color="C3", ms=6,
                 label="bin of positives only")
    top.set_xscale("logit")
    top.set_yscale("logit")
    top.set_xlim(lo, hi)
    top.set_ylim(lo, hi)
    ticks = [t for t in _LOGIT_TICKS if lo <= t <= hi]
    if len(ticks) > 7:   # keep 0.5 and every other decade, so labels do not collide
        mid = ticks.index(0.5) if 0.5 in ticks else 0
        ticks = [t for i, t in enumerate(ticks) if (i - mid) % 2 == 0]
    for axis in (top.xaxis, top.yaxis, bottom.xaxis):
        axis.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
        axis.set_minor_locator(NullLocator())
    top.grid(True, alpha=0.3)
    cells, positives = rb.count.sum(), rb.positives.sum()
    mean = rb.score_sum.sum() / cells if cells else math.nan
    top.set_title(f"{name}\nmean score {mean:.4f}, positive rate {positives / max(cells, 1):.4f}",
                  fontsize=10)
    top.set_ylabel("observed frequency of positives")
    top.legend(loc="upper left", fontsize=8)


def _bin_counts_panel(bottom, rb: ReliabilityBins) -> None:
    """Cells and positives per bin of one :class:`ReliabilityBins`, log scale, under its diagram."""
    filled = rb.count > 0
    centers = np.sqrt(rb.edges[:-1] * rb.edges[1:])
    centers[0], centers[-1] = rb.edges[1] / 2, 1 - (1 - rb.edges[-2]) / 2
    bottom.step(centers[filled], rb.count[filled], where="mid", color="0.3", label="cells")
    bottom.step(centers[filled], np.maximum(rb.positives[filled], ZERO_AT), where="mid", color="C3",
                label="positives")
    bottom.set_yscale("log")
    bottom.yaxis.set_minor_locator(NullLocator())
    bottom.yaxis.set_major_formatter(_PLAIN)   # not mathtext: its parser is slow
    bottom.set_ylim(bottom=ZERO_AT * 0.7)
    bottom.set_xlabel("mean predicted probability in bin")
    bottom.set_ylabel("count")
    bottom.legend(loc="upper right", fontsize=7)
    bottom.grid(True, alpha=0.3)


def ap_by_frequency(train_counts, ap, buckets, *, title: str = "") -> Figure:
    """Per-label average precision against the label's training positives, with bucket means.

    Args:
        train_counts: ``(L,)`` positives per label in the training split.
        ap: ``(L,)`` per-label average precision (NaN where undefined, as
            ``xmlc.eval.metrics.average_precision(..., average="none")`` returns it). NaN labels
            are not drawn; the legend counts them.
        buckets: ``(L,)`` 0 head, 1 torso, 2 tail.
        title: figure title.
    """
    counts = _as_np(train_counts)
    a = _as_np(ap)
    b = _as_np(buckets, np.int64)
    _check_labels("ap", a, counts.size)
    _check_labels("buckets", b, counts.size)
    colors = _bucket_colors(b)
    ok = ~np.isnan(a)
    fig = _new_figure(6.4, 4.6)
    ax = fig.subplots()
    x = np.maximum(counts, ZERO_AT)
    ax.scatter(x[ok], a[ok], s=5, c=colors[ok], alpha=0.45, linewidths=0, rasterized=True)
    _log_axis(ax, "x", counts)
    ax.set_ylim(-0.02, 1.02)
    means = []
    for i, name in enumerate(BUCKET_NAMES):   # 3 buckets, not labels
        sel = ok & (b == i)
        if sel.any():
            m = float(a[sel].mean())
            ax.hlines(m, x[sel].min(), x[sel].max(), colors="k", lw=4.5)
            ax.hlines(m, x[sel].min(), x[sel].max(), colors=BUCKET_COLORS[i], lw=3)
            means.append(f"{name} {m:.3f}")
    ax.set_xlabel("training positives per label")
    ax.set_ylabel("average precision")
    macro = float(a[ok].mean()) if ok.any() else math.nan
    ax.set_title(f"per-label AP: macro {macro:.3f}\nbucket means: " + ", ".join(means), fontsize=10)
    ax.grid(True, alpha=0.3)
    extra = [Line2D([], [], color="0.3", lw=3, label="bucket mean (over its count range)")]
    if (~ok).any():
        extra.append(Line2D([], [], ls="", label=f"not shown: {(~ok).sum():,} labels without a positive (AP undefined)"))
    _bucket_legend(ax, b, extra=extra, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def long_tail(counts, num_examples: int, *, buckets=None, power: float = 1.0, max_value: float | None = None,
              title: str = "") -> Figure:
    """Positives per label, sorted, log scale; right axis: the neg/pos ``pos_weight`` of that count.

    Labels with no positive cannot sit on a log axis; they are counted in the legend and
    shaded at the end of the rank axis.

    Args:
        counts: ``(L,)`` positives per label.
        num_examples: N, for ``pos_weight = ((N - n) / n) ** power`` (clipped at ``max_value``).
        buckets: ``(L,)`` head/torso/tail ids for the colours; default: all one colour.
        power, max_value: as in :func:`xmlc.stats.pos_weight_from_counts`.
        title: figure title.
    """
    c = _as_np(counts)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"counts must be a non-empty (L,) array, got shape {c.shape}")
    if not num_examples > 0:
        raise ValueError(f"num_examples must be > 0, got {num_examples}")
    order = np.argsort(-c, kind="stable")
    sorted_counts = c[order]
    nonzero = sorted_counts > 0
    fig = _new_figure(6.4, 4.6)
    ax = fig.subplots()
    _tail_areas(ax, sorted_counts, None if buckets is None else _as_np(buckets, np.int64)[order])
    zeros = int((~nonzero).sum())
    if zeros:
        ax.axvspan(c.size - zeros + 0.5, c.size + 0.5, color="0.85", label=f"{zeros:,} labels with 0 positives")
    ax.set_yscale("log")
    ax.set_ylim(ZERO_AT if zeros else max(sorted_counts[nonzero].min() / 2, ZERO_AT),
                max(sorted_counts[0], 1) * 2)
    ax.set_xlim(0.5, c.size + 0.5)
    ax.set_xlabel("label rank (most frequent first)")
    ax.set_ylabel("positives per label")
    ax.grid(True, which="major", alpha=0.3)
    _pos_weight_scale(ax, sorted_counts[nonzero], num_examples, power, max_value)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"label long tail: {c.size:,} labels, {int(num_examples):,} examples", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _tail_areas(ax, sorted_counts: np.ndarray, buckets: np.ndarray | None) -> None:
    """The area under the sorted counts, one colour per bucket (``buckets`` in the same order), and its edge."""
    rank = np.arange(1, sorted_counts.size + 1)
    nonzero = sorted_counts > 0
    if buckets is None:
        ax.fill_between(rank[nonzero], sorted_counts[nonzero], ZERO_AT, color="C0", alpha=0.35, lw=0)
    else:
        _bucket_colors(buckets)
        for i, (name, color) in enumerate(zip(BUCKET_NAMES, BUCKET_COLORS)):   # 3 buckets, not labels
            sel = nonzero & (buckets == i)
            if sel.any():   # each area reaches to the next label's rank, so neighbours touch
                ax.fill_between(rank, sorted_counts, ZERO_AT, where=sel | np.r_[False, sel[:-1]], color=color,
                                alpha=0.4, lw=0, label=f"{name} ({int((buckets == i).sum()):,} labels)", step="mid")
    few = int(nonzero.sum()) < 2   # one point draws no line and no area: mark it
    ax.plot(rank[nonzero], sorted_counts[nonzero], color="k", lw=1, marker="o" if few else None, ms=5)


def _pos_weight_scale(ax, positive_counts: np.ndarray, num_examples: int, power: float,
                      max_value: float | None) -> None:
    """The right axis in ``pos_weight = neg / pos``, the range of the weights, and their cap."""
    n = float(num_examples)
    right = ax.secondary_yaxis("right", functions=(lambda v: (n - v) / np.maximum(v, 1e-12),
                                                   lambda w: n / (np.maximum(w, -1 + 1e-12) + 1)))
    right.set_ylabel("pos_weight = neg / pos")
    for axis in (ax.yaxis, right.yaxis):   # 1, 2, 5 per decade, plain numbers
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(_PLAIN)
        axis.set_minor_locator(NullLocator())
    if not positive_counts.size:
        return
    w = pos_weight_from_counts(positive_counts, int(num_examples), power=power, max_value=max_value).numpy()
    text = (f"pos_weight over the {positive_counts.size:,} labels with a positive:\n"
            f"min {w.min():.3g}, median {np.median(w):.3g}, max {w.max():.3g}"
            + (f" (power {power:g})" if power != 1 else ""))
    ax.text(0.98, 0.97, text, transform=ax.transAxes, ha="right", va="top", fontsize=8,
            bbox={"boxstyle": "round", "fc": "white", "alpha": 0.85})
    if max_value is not None:
        cap = n / (max_value ** (1 / power) + 1) if power > 0 else 0
        if cap > ZERO_AT:
            ax.axhline(cap, color="C3", lw=1, ls="--", label=f"pos_weight capped at {max_value:g} below")


# ---------------------------------------------------------------------------------------
# One validation pass -> the run's figures; rendering


def run_figures(scores, targets, *, train_counts, buckets, thresholds, pos_weight=None, ap=None,
                calibration: str = "calibrated", title: str = "") -> dict[str, Figure]:
    """The run's diagnostic figures from one set of evaluation scores.

    Args:
        scores: ``(N, L)`` probabilities on the evaluated split (validation).
        targets: ``(N, L)`` {0,1} CSR or dense.
        train_counts: ``(L,)`` training positives per label.
        buckets: ``(L,)`` head/torso/tail ids (from the training counts).
        thresholds: ``(L,)`` calibrated thresholds (the right panel of predicted_vs_true).
        pos_weight: ``(L,)`` if the run used one: adds the corrected reliability panel.
        ap: ``(L,)`` per-label AP if the caller has it already (else computed here).
        calibration: name of the calibration method, for the panel title.
        title: title of every figure (e.g. which split, which step).

    Returns:
        ``{name: Figure}`` with the keys of :data:`FIGURE_NAMES`.
    """
    inputs = eval_inputs(scores, targets, engine="numpy")
    s, true = inputs.scores, inputs.counts
    decisions = {"at 0.5": predicted_counts(s, 0.5),
                 f"calibrated thresholds ({calibration})": predicted_counts(s, thresholds)}
    bins = {"as trained": reliability_bins(s, targets)}
    if pos_weight is not None:
        bins["after the ln(pos_weight) logit correction"] = reliability_bins(s, targets, pos_weight=pos_weight)
    if ap is None:
        ap = average_precision(s, targets, average="none")
    return {
        "predicted_vs_true": predicted_vs_true(true, decisions, buckets, title=title),
        "reliability": reliability(bins, title=title),
        "ap_by_frequency": ap_by_frequency(train_counts, ap, buckets, title=title),
    }


def to_png(fig: Figure, *, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (Agg canvas; no pyplot)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_png(fig: Figure, path, *, dpi: int = 100) -> Path:
    """Write the figure to ``path`` as PNG (parent directories created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_png(fig, dpi=dpi))
    return path
