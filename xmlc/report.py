"""One self-contained HTML page about a training run: ``python -m xmlc.report RUN_DIR [--out FILE]``.

The page holds the run's figures (``RUN_DIR/figures/*.png``, embedded as base64, so the file
can be attached to a ticket or mailed on its own), the metrics tables and timings from
``metrics.json`` (with the linear baseline's columns when it holds ``"baseline"``,
:mod:`xmlc.baseline`), the per-epoch validation history (from ``last.pt`` when present) and the
resolved ``config.yaml``. Nothing is recomputed: a run directory is all it needs. Written to
``RUN_DIR/report.html`` unless ``--out`` says otherwise; prints where it went.

A directory that is not a run directory (no ``config.yaml``) or an unreadable
``metrics.json`` is a usage error (exit status 2) naming the file. A run that has not
finished (no ``metrics.json`` yet) still gets a page, saying so.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import pickle
import sys
import time
from pathlib import Path

from xmlc.cli import ExitStatus
from xmlc.errors import CheckpointError
from xmlc.eval.figures import FIGURE_NAMES
from xmlc.run import RunArtifact

__all__ = ["main", "build_report", "write_report", "ReportError"]

# split keys of metrics.json, in the order their columns appear
SPLITS = ("val", "val_calibrated", "test", "test_calibrated", "test_prior", "test_before_refit",
          "test_before_finetune")
# metrics shown first, in this order; every other number of a split follows
FIRST_METRICS = ("auprc_micro", "auprc_macro", "p@1", "p@3", "p@5", "f1_micro", "f1_macro",
                 "positive_rate_ratio", "positive_rate_ratio_head", "positive_rate_ratio_torso",
                 "positive_rate_ratio_tail", "expected_positive_ratio", "expected_positive_ratio_head",
                 "expected_positive_ratio_torso", "expected_positive_ratio_tail")
# metrics.json's lists of the labels that over- and under-predict most at the calibrated thresholds
LABEL_LISTS = ("test_calibrated_labels", "val_calibrated_labels")
TIMINGS = (("epochs", "epochs trained"), ("best_epoch", "best epoch"), ("selected_epoch", "selected epoch (shipped)"),
           ("steps", "optimizer steps"),
           ("epoch_time_s", "mean epoch time (s)"), ("train_time_s", "training time, all epochs (s)"),
           ("train_examples_per_s", "training examples / s"),
           ("peak_rss_mb", "peak resident memory (MiB)"), ("num_train", "training examples"),
           ("num_val", "validation examples"), ("num_test", "test examples"),
           ("num_features", "features"), ("num_labels", "labels"))
BASELINE_TIMINGS = (("fit_time_s", "fit time (s)"), ("fit_rows", "rows fitted on"), ("final", "train.final"),
                    ("eval_time_s", "evaluation time (s)"), ("process", "process (own, or the run's)"),
                    ("peak_rss_mb", "peak resident memory (MiB)"),
                    ("rss_growth_mb", "resident memory added (MiB)"), ("coef_mb", "coefficients (MiB)"),
                    ("num_constant_labels", "labels with a constant score"),
                    ("num_few_positives", "labels under eval.min_positives (global threshold)"))
FIGURE_CAPTIONS = {
    "predicted_vs_true": "Predicted against true positives per label (one dot per label). Above the "
                         "diagonal: the model predicts the label more often than it occurs.",
    "reliability": "Reliability: observed frequency of positives against the mean predicted "
                   "probability, binned over all (example, label) cells; counts per bin below.",
    "ap_by_frequency": "Per-label average precision against the label's training positives, "
                       "with the head / torso / tail means.",
    "long_tail": "Positives per label in the training split, sorted; right axis: neg/pos pos_weight.",
}


class ReportError(ValueError):
    """The run directory or one of its files cannot be used (exit status 2)."""


def _read_metrics(run: Path) -> dict | None:
    path = run / "metrics.json"
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(value, dict):
        raise ReportError(f"{path}: expected a JSON object at the top, got {type(value).__name__}")
    return value


def _history(run: Path) -> list[dict]:
    """Per-epoch validation metrics from last.pt (empty if there is no readable checkpoint)."""
    path = run / "last.pt"
    if not path.is_file():
        return []
    try:
        history = RunArtifact.load(path).progress.history
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, CheckpointError):
        return []   # the page is still useful without the history
    return [h for h in history if isinstance(h, dict)]


def _number(value) -> str:
    if value is None:   # metrics.json writes an undefined metric (NaN) as null (xmlc._json)
        return '<span title="undefined for this split, e.g. an empty frequency bucket">&ndash;</span>'
    if isinstance(value, bool):
        return html.escape(str(value))
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}" if abs(value) >= 100 else f"{value:.4f}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metrics_table(results: dict) -> str:
    columns = [(s, results[s]) for s in SPLITS if isinstance(results.get(s), dict)]
    columns[_after_test(columns):_after_test(columns)] = _baseline_columns(results)
    if not columns:
        return "<p>metrics.json holds no split metrics.</p>"
    names = [m for m in FIRST_METRICS if any(m in c for _, c in columns)]
    names += sorted({k for _, c in columns for k, v in c.items()
                     if (v is None or isinstance(v, (int, float))) and k not in names})
    rows = [[html.escape(m), *[_number(c[m]) if m in c else "" for _, c in columns]] for m in names]
    return _table(["metric", *[name for name, _ in columns]], rows)


def _after_test(columns: list) -> int:
    """Where the baseline's columns go: after the run's test (else validation) columns."""
    names = [name for name, _ in columns]
    for split in ("test_calibrated", "test", "val_calibrated", "val"):
        if split in names:
            return names.index(split) + 1
    return len(columns)


def _baseline_columns(results: dict) -> list[tuple[str, dict]]:
    """The baseline's test (else validation) columns, and ``ours - linear`` at calibrated thresholds."""
    base = results.get("baseline")
    if not isinstance(base, dict):
        return []
    split = "test" if isinstance(base.get("test"), dict) else "val"
    columns = [(f"linear {s}", base[s]) for s in (split, f"{split}_calibrated") if isinstance(base.get(s), dict)]
    ours, theirs = results.get(f"{split}_calibrated"), base.get(f"{split}_calibrated")
    if isinstance(ours, dict) and isinstance(theirs, dict):
        delta = {m: v - theirs[m] for m, v in ours.items() if isinstance(v, float) and isinstance(theirs.get(m), float)}
        columns.append((f"ours - linear ({split}_calibrated)", delta))
    return columns


def _timings_table(results: dict) -> str:
    rows = [[html.escape(label), _number(results[key])] for key, label in TIMINGS if results.get(key) is not None]
    for phase in ("refit", "finetune", "crossfit"):
        info = results.get(phase)
        if isinstance(info, dict) and info:
            rows += [[html.escape(f"{phase}: {k}"), _number(v)] for k, v in info.items()
                     if v is None or isinstance(v, (int, float))]
    base = results.get("baseline")
    if isinstance(base, dict):
        rows += [[html.escape(f"linear baseline: {label}"), _number(base[key])] for key, label in BASELINE_TIMINGS
                 if base.get(key) is not None]
    state = results.get("optimizer_state")
    if isinstance(state, dict) and state.get("total_mb") is not None:
        rows.append(["optimizer state (MiB)", _number(state["total_mb"])])
        largest = state.get("largest") or {}
        if largest.get("parameter"):
            rows.append([html.escape(f"of which {largest['parameter']} {largest.get('shape')} (MiB)"),
                         _number(largest.get("mb"))])
    return _table(["", "value"], rows) if rows else "<p>no timings in metrics.json.</p>"


def _labels_tables(results: dict) -> list[str]:
    """The labels that over- and under-predict most at the calibrated thresholds, by name."""
    key = next((k for k in LABEL_LISTS if isinstance(results.get(k), dict)), None)
    if key is None:
        return []
    parts = [f"<p>From <code>{key}</code> in metrics.json: per label, true and predicted positives at the "
             "calibrated thresholds, and expected positives (the sum of the label's probabilities). "
             "Ranked by predicted minus true.</p>"]
    for side, title in (("over", "Labels that over-predict most"), ("under", "Labels that under-predict most")):
        entries = [e for e in results[key].get(side) or [] if isinstance(e, dict)]
        rows = [[html.escape(str(e.get("label"))), html.escape(str(e.get("bucket") or "")), _number(e.get("true")),
                 _number(e.get("predicted")), _number(e.get("expected"))] for e in entries]
        parts += [f"<h3>{title}</h3>",
                  _table(["label", "bucket", "true", "predicted", "expected"], rows) if rows else "<p>none.</p>"]
    return parts


def _history_table(history: list[dict]) -> str:
    keys = [k for k in ("epoch", "step", "auprc_macro", "auprc_micro", "p@1", "f1_micro", "positive_rate_ratio",
                        "calibrated/f1_micro", "calibrated/positive_rate_ratio") if k in history[0]]
    rows = [[_number(h.get(k)) for k in keys] for h in history]
    return _table(keys, rows)


def _figures(run: Path) -> list[tuple[str, bytes]]:
    folder = run / "figures"
    if not folder.is_dir():
        return []
    files = {p.stem: p for p in folder.glob("*.png") if p.is_file()}
    order = [*[n for n in (*FIGURE_NAMES, "long_tail") if n in files], *sorted(set(files) - {*FIGURE_NAMES, "long_tail"})]
    return [(name, files[name].read_bytes()) for name in order]


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #555; } img { max-width: 100%; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.note { color: #a40; }
"""


def build_report(run_dir) -> str:
    """The HTML page for ``run_dir`` as a string (see the module docstring)."""
    run = Path(run_dir)
    if not run.exists():
        raise ReportError(f"{run}: no such directory")
    if not run.is_dir():
        raise ReportError(f"{run}: not a directory (give the run directory, output.dir of the run)")
    config_path = run / "config.yaml"
    if not config_path.is_file():
        raise ReportError(f"{run}: not a run directory (no config.yaml; give output.dir of a training run)")
    try:
        config = config_path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{config_path}: cannot read: {exc}") from exc
    results = _read_metrics(run)
    history = _history(run)
    figures = _figures(run)

    parts = [f"<h1>xmlc run report: {html.escape(str(run.resolve()))}</h1>",
             f"<p>generated {html.escape(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}</p>"]
    if results is None:
        parts.append('<p class="note">metrics.json is missing: the run has not finished (or was stopped); '
                     "only the config, the history so far and any figures are shown.</p>")
    else:
        parts += ["<h2>Metrics</h2>",
                  "<p>Columns: <code>val</code>/<code>test</code> at threshold 0.5, <code>*_calibrated</code> at the "
                  "per-label thresholds fitted on validation, <code>test_prior</code> at the ln(pos_weight) "
                  "correction. <code>linear *</code>: the one-vs-rest logistic regression baseline on the same splits "
                  "(<code>eval.baseline: linear</code> or <code>python -m xmlc.baseline</code>), and <code>ours - "
                  "linear</code> the difference. <code>positive_rate_ratio</code> = predicted / true positives (1 is right; per frequency "
                  "bucket in <code>_head</code>, <code>_torso</code>, <code>_tail</code>); "
                  "<code>expected_positive_ratio</code> = the sum of the probabilities / true positives (the "
                  "calibration of the probabilities themselves). &ndash;: "
                  "undefined for this split (<code>null</code> in metrics.json), e.g. an empty frequency bucket.</p>",
                  _metrics_table(results)]
        labels = _labels_tables(results)
        if labels:
            parts += ["<h2>Calibration by label</h2>", *labels]
        parts += ["<h2>Timings and sizes</h2>", _timings_table(results)]
    if history:
        parts += ["<h2>Validation per epoch</h2>", _history_table(history)]
    parts.append("<h2>Figures</h2>")
    if figures:
        for name, png in figures:
            caption = FIGURE_CAPTIONS.get(name, name)
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
                         f"<figcaption><b>{html.escape(name)}</b>: {html.escape(caption)}</figcaption></figure>")
    else:
        parts.append("<p>No figures in this run directory (<code>output.figures: false</code>, or the run "
                     "did not finish).</p>")
    parts += ["<h2>Resolved config (config.yaml)</h2>", f"<pre>{html.escape(config)}</pre>"]
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>xmlc report: {html.escape(run.name)}</title><style>{_STYLE}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def write_report(run_dir, out=None) -> Path:
    """Write :func:`build_report` to ``out`` (default ``RUN_DIR/report.html``); returns the path."""
    page = build_report(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page)
    except OSError as exc:
        raise ReportError(f"{path}: cannot write the report: {exc}") from exc
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmlc.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training run's output.dir")
    parser.add_argument("--out", help="HTML file to write (default: RUN_DIR/report.html)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.run_dir, args.out)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitStatus.USAGE
    print(f"wrote {path.resolve()}")
    return ExitStatus.OK


if __name__ == "__main__":
    sys.exit(main())
