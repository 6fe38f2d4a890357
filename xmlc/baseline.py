"""An honest baseline beside a run: one-vs-rest logistic regression on the run's own features and splits.

``python -m xmlc.baseline [--config FILE] [section.key=value ...]`` (the overrides of
``python -m xmlc.train``), or ``eval.baseline: linear`` in a training run, fits one scikit-learn
``LogisticRegression`` per label (liblinear, C=1, L2) on the training split the run trains on,
read through the same :func:`xmlc.data.load_splits` (same seed, normalisation and featuriser);
fits the per-label thresholds on validation as the run does (``eval.calibration``,
``eval.min_positives``; :func:`xmlc.eval.calibrate.thresholds_for`); and computes val and test
metrics with the run's :func:`xmlc.eval.summary.metrics_report`, buckets and propensities of the
training split included. Under ``train.final: refit`` or ``crossfit`` the run trains on the
validation rows too, so the baseline is refitted on train + validation after its thresholds are
fitted, as ``refit`` does.

The result goes under ``"baseline"`` in ``<output.dir>/metrics.json`` (merged into a run's file by
an atomic replace, or a new file), with its fit time, evaluation time and peak memory beside the
run's training time; a table compares it with the run. Memory: the coefficients are a dense
``(D, L)`` float32 matrix, labels stay CSR, and scores are dense ``(N, L)`` as in the run.

Example::

    >>> import scipy.sparse as sp, numpy as np
    >>> X = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]], np.float32))
    >>> Y = sp.csr_matrix(np.array([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32))
    >>> model = fit_linear(X, Y)
    >>> model.coef.shape, bool(model.scores(X)[0, 0] > 0.5)
    ((2, 2), True)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from xmlc import stats
from xmlc._json import dumps
from xmlc.checkpoint import check_run_dir
from xmlc.cli import ExitStatus, report_error
from xmlc.config import Config, ConfigError, EvalConfig, dump_config, load_config, to_dict
from xmlc.data import XMCData, concat_data, load_splits
from xmlc.eval.calibrate import thresholds_for
from xmlc.eval.summary import TABLE_METRICS, metrics_report, metrics_table
from xmlc.errors import DataFileError
from xmlc.recipe import resolve_final
from xmlc.run import LabelStats

__all__ = ["LinearModel", "BaselineResult", "PeakMemory", "fit_linear", "run_baseline", "linear_baseline",
           "read_metrics", "merge_metrics", "config_notes", "run_train_time", "comparison_table", "main"]

DESCRIPTION = "one-vs-rest logistic regression (scikit-learn, liblinear, C=1)"


@dataclass
class LinearModel:
    """One logistic regression per label: ``P(y_l = 1 | x) = sigmoid(x @ coef[:, l] + intercept[l])``.

    Attributes:
        coef: ``(D, L)`` float32.
        intercept: ``(L,)`` float64; ``-inf`` / ``+inf`` for a label with no positive / only
            positives in the training rows (a constant score 0 / 1).
    """

    coef: np.ndarray
    intercept: np.ndarray

    @property
    def num_constant(self) -> int:
        """Labels with a constant score (no positive or no negative in the training rows)."""
        return int(np.isinf(self.intercept).sum())

    def scores(self, features) -> np.ndarray:
        """``(N, L)`` float32 probabilities of the rows of ``features`` (CSR or dense ``(N, D)``),
        in batches of at most 2**24 logits."""
        out = np.empty((features.shape[0], self.coef.shape[1]), dtype=np.float32)
        batch_rows = max(1, 2**24 // max(1, self.coef.shape[1]))
        for start in range(0, features.shape[0], batch_rows):
            logits = features[start:start + batch_rows] @ self.coef
            out[start:start + batch_rows] = expit(np.asarray(logits, dtype=np.float64) + self.intercept)
        return out


def fit_linear(features, labels: sp.csr_matrix, *, C: float = 1.0, seed: int = 0) -> LinearModel:
    """Fit ``LogisticRegression(solver="liblinear", C=C)`` for each label, one at a time.

    Args:
        features: ``(N, D)`` CSR or dense. labels: ``(N, L)`` CSR {0, 1}.
        C: inverse regularisation strength. seed: liblinear's ``random_state``.

    Returns:
        :class:`LinearModel`; labels with no positive or no negative in ``labels`` get a
        constant score (their intercept is -inf / +inf) and no fit.
    """
    LogisticRegression = _logistic_regression()
    X = sp.csr_matrix(features, dtype=np.float64) if sp.issparse(features) else np.asarray(features, np.float64)
    n, num_labels = labels.shape
    columns = sp.csc_matrix(labels)
    coef = np.zeros((X.shape[1], num_labels), dtype=np.float32)
    intercept = np.zeros(num_labels, dtype=np.float64)
    y = np.zeros(n, dtype=np.int8)
    for j in range(num_labels):
        rows = columns.indices[columns.indptr[j]:columns.indptr[j + 1]]
        if rows.size in (0, n):
            intercept[j] = np.inf if rows.size else -np.inf
            continue
        y[:] = 0
        y[rows] = 1
        clf = LogisticRegression(solver="liblinear", C=C, random_state=seed).fit(X, y)
        coef[:, j] = clf.coef_[0]
        intercept[j] = clf.intercept_[0]
    return LinearModel(coef, intercept)


def _logistic_regression():
    """scikit-learn's class, imported on first use: the trainer starts without it (about 2 s)."""
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression


@dataclass
class BaselineResult:
    """What :func:`run_baseline` measured: metrics per split, as the run names them, and costs."""

    metrics: dict            # {"val", "val_calibrated"[, "test", "test_calibrated"]}: metric dicts
    thresholds: np.ndarray   # (L,) fitted on the validation scores
    final: str               # "none": fitted on train; "refit": refitted on train + validation
    fit_rows: int            # rows of the last fit
    fit_time_s: float        # wall time of the fit(s)
    eval_time_s: float       # scoring, thresholds and metrics
    peak_rss_mb: float       # peak resident memory of the process while the baseline ran (:class:`PeakMemory`)
    rss_growth_mb: float     # that peak less the resident memory when the baseline started
    coef_mb: float
    num_constant_labels: int
    num_few_positives: int   # labels with fewer than eval.min_positives validation positives (global threshold)

    def to_dict(self) -> dict:
        """The ``"baseline"`` entry of ``metrics.json``."""
        return {"model": DESCRIPTION, **self.metrics, "final": self.final, "fit_rows": self.fit_rows,
                "fit_time_s": self.fit_time_s, "eval_time_s": self.eval_time_s, "peak_rss_mb": self.peak_rss_mb,
                "rss_growth_mb": self.rss_growth_mb, "coef_mb": self.coef_mb,
                "num_constant_labels": self.num_constant_labels, "num_few_positives": self.num_few_positives}


def run_baseline(train: XMCData, val: XMCData, test: XMCData | None, ecfg: EvalConfig, *, seed: int = 0,
                 refit: bool = False, say=None) -> BaselineResult:
    """Fit :func:`fit_linear` on ``train``, thresholds on ``val``, metrics on ``val`` and ``test``.

    Args:
        train, val, test: the run's splits (``test`` may be None).
        ecfg: the ``eval`` section: ``ks``, ``calibration`` (``prior`` means 0.5 here: the
            regression has no pos_weight to undo), ``min_positives``.
        seed: liblinear's ``random_state``.
        refit: after the thresholds, fit again on train + validation and test that model.
        say: called with a line of progress; None: silent.

    Returns:
        :class:`BaselineResult`; its metrics have the keys and meaning of the run's ``val``,
        ``val_calibrated``, ``test`` and ``test_calibrated``.
    """
    counts, num_examples = stats.label_and_example_counts(train.labels, train.num_labels)
    label_stats = LabelStats(counts, num_examples, None)
    report = {"ks": tuple(ecfg.ks), "buckets": label_stats.buckets, "propensities": label_stats.propensities}
    if say is not None:
        say(f"baseline: {DESCRIPTION}, {train.num_labels:,} labels on {len(train):,} rows; coefficients "
            f"{train.num_features:,} x {train.num_labels:,} float32 ({_coef_mb(train):,.0f} MiB)")
    _logistic_regression()   # imported before the clock starts, as the run's torch is
    with PeakMemory() as memory:
        start = time.perf_counter()
        model = fit_linear(train.features, train.labels, seed=seed)
        fit_time, start = time.perf_counter() - start, time.perf_counter()
        scores = model.scores(val.features)
        thresholds = thresholds_for(ecfg, scores, val.labels, None, label_stats.buckets)
        val_report = metrics_report(scores, val.labels, {"calibrated": thresholds}, **report)
        metrics = {"val": val_report["at_0.5"], "val_calibrated": val_report["calibrated"]}
        eval_time, fit_rows = time.perf_counter() - start, len(train)
        del scores
        if refit:
            start = time.perf_counter()
            both = concat_data(train, val)
            model, fit_rows = fit_linear(both.features, both.labels, seed=seed), len(both)
            fit_time += time.perf_counter() - start
        if test is not None:
            start = time.perf_counter()
            test_report = metrics_report(model.scores(test.features), test.labels, {"calibrated": thresholds}, **report)
            metrics |= {"test": test_report["at_0.5"], "test_calibrated": test_report["calibrated"]}
            eval_time += time.perf_counter() - start
    few = int((stats.label_counts(val.labels, val.num_labels) < ecfg.min_positives).sum())
    return BaselineResult(metrics, thresholds.numpy(), "refit" if refit else "none", fit_rows, fit_time, eval_time,
                          memory.peak_mb, memory.growth_mb, _coef_mb(train), model.num_constant, few)


def _coef_mb(data: XMCData) -> float:
    return data.num_features * data.num_labels * 4 / 2**20


class PeakMemory:
    """Peak resident memory of this process inside a ``with`` block, MiB: the kernel's high-water
    mark when the block raised it, else the highest of samples taken every 10 ms (the process
    peaked earlier, e.g. while training); ``growth_mb`` is that peak less the RSS at the start."""

    def __enter__(self) -> PeakMemory:
        self._start_rss, self._start_max = _rss_mb(), _max_rss_mb()
        self._peak, self._stop = self._start_rss, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self._peak = max(self._peak, _rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        high = _max_rss_mb()
        self.peak_mb = high if high > self._start_max else max(self._peak, _rss_mb())
        self.growth_mb = max(0.0, self.peak_mb - self._start_rss)


def _max_rss_mb() -> float:
    """The process's peak resident set size so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    """The process's resident set size now, MiB (``/proc/self/statm``; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return _max_rss_mb()


# ---------------------------------------------------------------------------------------
# Beside a run: the metrics.json entry and the table


def linear_baseline(splits, cfg: Config, *, run_results: dict | None = None, own_process: bool = False,
                    say=None) -> dict:
    """:func:`run_baseline` on the run's ``(train, val, test)`` with its ``eval`` section, seed and
    ``train.final``; returns the ``"baseline"`` entry of ``metrics.json``, with the run's training
    time (:func:`run_train_time`) when ``run_results`` holds it.

    ``own_process``: the baseline ran in a process of its own (``python -m xmlc.baseline``):
    ``peak_rss_mb`` is then that process's peak, data and features included, like the run's;
    otherwise (``"process": "run"``) it is the run's process's peak while the baseline ran, and
    ``rss_growth_mb`` says what the baseline added to it.
    """
    train, val, test = splits
    refit = resolve_final(cfg, train.num_features) != "none"
    result = run_baseline(train, val, test, cfg.eval, seed=cfg.train.seed, refit=refit, say=say)
    record = result.to_dict()
    record["process"] = "own" if own_process else "run"
    if own_process:
        record["peak_rss_mb"] = max(result.peak_rss_mb, _max_rss_mb())
    train_time = run_train_time(run_results or {})
    if train_time is not None:
        record["run_train_time_s"] = train_time
    return record


def run_train_time(results: dict) -> float | None:
    """A run's training time (s) from its ``metrics.json``: ``train_time_s`` (all epochs, validation
    excluded), else mean epoch time x epochs; plus the refit's or fine-tune's time. None when it holds neither."""
    base = results.get("train_time_s")
    if base is None and results.get("epoch_time_s") is not None and results.get("epochs") is not None:
        base = results["epoch_time_s"] * results["epochs"]
    if base is None:
        return None
    phases = [results.get(phase) for phase in ("refit", "finetune")]
    return float(base + sum((info.get("time_s") or 0.0) for info in phases if isinstance(info, dict)))


def comparison_table(results: dict) -> str:
    """Markdown: the run's calibrated test (or validation) metrics beside the baseline's in
    ``results["baseline"]``, with ``ours - linear``; then training time and peak memory with the
    ratio ``ours / linear``. Without the run's metrics, the baseline's at 0.5 and calibrated."""
    base = results["baseline"]
    split = "test" if "test" in base else "val"
    ours = results.get(f"{split}_calibrated")
    if not isinstance(ours, dict):
        table = metrics_table([("linear @0.5", base[split]), ("linear calibrated", base[f"{split}_calibrated"])],
                              title=split)
        return table + (f"\nlinear: fit {base['fit_time_s']:.1f} s on {base['fit_rows']:,} rows, "
                        f"peak resident memory {base['peak_rss_mb']:,.0f} MiB")
    lines = [f"| {split} (calibrated) | ours | linear | ours - linear |", "|---|---:|---:|---:|"]
    for metric in TABLE_METRICS:
        if metric in ours and metric in base[f"{split}_calibrated"]:
            a, b = ours[metric], base[f"{split}_calibrated"][metric]
            delta = None if a is None or b is None else a - b
            lines.append(f"| {metric} | {_cell(a)} | {_cell(b)} | {_cell(delta, '+.4f')} |")
    costs = [("train time (s)", run_train_time(results), base["fit_time_s"])]
    if base.get("process") == "own":
        costs.append(("peak resident memory (MiB)", results.get("peak_rss_mb"), base["peak_rss_mb"]))
    for label, a, b in costs:
        ratio = f"{a / b:.1f}x (ours / linear)" if a is not None and b else ""
        lines.append(f"| {label} | {_cell(a, ',.2f')} | {_cell(b, ',.2f')} | {ratio} |")
    if base.get("process") == "run":
        lines.append(f"| resident memory (MiB) | {_cell(results.get('peak_rss_mb'), ',.1f')} peak | "
                     f"+{_cell(base['rss_growth_mb'], ',.1f')} | linear: added to the run's process |")
    return "\n".join(lines)


def _cell(value, spec: str = ".4f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def read_metrics(path: Path) -> dict:
    """The JSON object in ``path`` ({} when there is no file); anything else raises a
    :class:`DataFileError` naming the file (it is never overwritten then)."""
    if not path.is_file():
        return {}
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                            f"not overwritten") from exc
    if not isinstance(results, dict):
        raise DataFileError(f"{path}: expected a JSON object at the top, got {type(results).__name__}; "
                            f"not overwritten")
    return results


def merge_metrics(path: Path, record: dict) -> dict:
    """Set ``"baseline"`` to ``record`` in the JSON object at ``path`` (:func:`read_metrics`; created
    if absent), replacing the file atomically; returns the merged object."""
    results = read_metrics(path)
    results["baseline"] = record
    fd, tmp = tempfile.mkstemp(prefix=".metrics-", suffix=".json.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(dumps(results, indent=2) + "\n")   # NaN -> null (xmlc._json)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return results


def config_notes(path: Path, cfg: Config) -> list[str]:
    """Lines naming the keys that decide the baseline's data and metrics (``data``, ``features``,
    ``train.seed``, ``train.final``, ``eval.ks`` / ``calibration`` / ``min_positives``) where the
    run's ``config.yaml`` at ``path`` differs from ``cfg``; [] when it agrees or there is none."""
    if not path.is_file():
        return []
    try:
        theirs = to_dict(load_config(path))
    except (ConfigError, OSError) as exc:
        return [f"note: cannot compare with the run's config ({exc})"]
    ours, keys = to_dict(cfg), []
    for section, names in (("data", None), ("features", None), ("train", ("seed", "final")),
                           ("eval", ("ks", "calibration", "min_positives"))):
        for name in names or ours[section]:
            if ours[section][name] not in (theirs[section][name], "auto"):   # the run resolved its own auto
                keys.append(f"{section}.{name} ({theirs[section][name]!r} in the run, {ours[section][name]!r} here)")
    return [f"note: the baseline does not see what the run in {path.parent} saw: {', '.join(keys)}"] if keys else []


# ---------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m xmlc.baseline",
        description=f"Fit a {DESCRIPTION} on the features and splits a training run with the same config "
                    "uses; write it under \"baseline\" in <output.dir>/metrics.json beside the run's metrics. "
                    "Overrides look like data.train=path/train.txt (values are parsed as YAML).")
    parser.add_argument("--config", help="YAML config file, e.g. a run's config.yaml (default: the built-in config)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """CLI entry point; returns the exit status (:class:`xmlc.cli.ExitStatus`)."""
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        out = check_run_dir(cfg.output.dir)
        path = out / "metrics.json"
        run_results = read_metrics(path)   # a file that cannot be merged into fails before the fit
        for note in config_notes(out / "config.yaml", cfg):
            print(note, file=sys.stderr)
        splits = load_splits(cfg.data, seed=cfg.train.seed, features=cfg.features, say=print)
        record = linear_baseline(splits, cfg, run_results=run_results, own_process=True, say=print)
        out.mkdir(parents=True, exist_ok=True)
        results = merge_metrics(path, record)
        if not (out / "config.yaml").is_file():   # a directory of its own: python -m xmlc.report reads it
            (out / "config.yaml").write_text(dump_config(cfg))
    except Exception as exc:   # a user error: one line and its status; anything else: traceback
        return report_error(exc)
    print(comparison_table(results))
    print(f"wrote {path} (\"baseline\"); one HTML page: python -m xmlc.report {out}")
    return ExitStatus.OK


if __name__ == "__main__":
    sys.exit(main())
