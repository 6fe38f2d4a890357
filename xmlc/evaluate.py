"""Evaluate a checkpoint on a labelled file: ``python -m xmlc.evaluate --checkpoint C --data FILE``.

The model, its input normalisation, its label statistics (for head/torso/tail buckets and
PSP@k) and its calibrated thresholds all come from the checkpoint; the training config and
data are not needed. Prints a metric table (at 0.5, at the calibrated thresholds when the
checkpoint has them, i.e. ``best.pt`` of a finished run, and at ``ln(pos_weight)`` for a
model trained with ``pos_weight``) and writes the numbers as JSON (``--out``, default
``<checkpoint dir>/eval-<data file name>.json``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from xmlc import data as xdata
from xmlc.eval import calibrate
from xmlc._json import write_json
from xmlc.checkpoint import checkpoint_path
from xmlc.cli import INPUT_ERRORS, ExitStatus, device_name, positive_int, report_error
from xmlc.config import ConfigError, apply_overrides
from xmlc.data import DataFileError
from xmlc.data.features import TextFeaturizer
from xmlc.inference import check_finite_scores, predict_scores
from xmlc.eval.summary import metrics_report, metrics_table
from xmlc.data.load import read_for_model
from xmlc.run import RunArtifact

__all__ = ["main", "evaluate_checkpoint"]


def evaluate_checkpoint(checkpoint: str | Path, data_path: str | Path, *, batch_size: int | None = None,
                        device: str = "cpu", labels_path: str | Path | None = None,
                        overrides: list[str] = (), notes: list[str] | None = None) -> dict:
    """Metrics of the checkpoint's model on ``data_path``: any input the run could train on
    (XMC, or raw text / tables / feature matrices through the checkpoint's featuriser and label
    names; ``labels_path`` is the labels file of a feature matrix). ``overrides`` are
    ``data.key=value`` changes to the checkpoint's ``data`` section (e.g. another text column);
    ``notes`` collects lines for the user (format decided, labels training never saw).

    Returns:
        ``{"at_0.5": {...}, "calibrated": {...} (if thresholds), "prior": {...} (if pos_weight),
        "checkpoint": str, "data": str, "num_examples": int}`` with the names of
        :func:`xmlc.eval.metrics.evaluate_all`.
    """
    device = torch.device(device)
    run = RunArtifact.load(checkpoint, in_run_dir="best.pt", mmap=True)
    model, cfg = run.build_model(device, source=str(checkpoint_path(checkpoint, "best.pt"))), run.config
    dcfg = apply_overrides(cfg, list(overrides)).data
    if not Path(data_path).is_file():
        raise DataFileError(f"--data: file not found: {data_path}")
    names, state = run.label_names, run.featurizer
    data = read_for_model(data_path, dcfg, key="--data", num_features=run.num_features,
                          label_names=None if names is None else list(names),
                          featurizer=None if state is None else TextFeaturizer.from_state(state),
                          labels_path=labels_path, notes=notes)
    xdata.check_labelled(data, f"--data ({data_path})")
    loader = xdata.make_loader(data, batch_size or xdata.EVAL_BATCH_SIZE, shuffle=False,
                               pin_memory=device.type == "cuda")
    scores = check_finite_scores(predict_scores(model, loader, len(data), device=device))
    label_stats, thresholds = run.label_stats, {}
    if run.thresholds is not None:
        thresholds["calibrated"] = run.thresholds
    if label_stats.pos_weight is not None:
        thresholds["prior"] = calibrate.prior_thresholds(label_stats.pos_weight)
    report = metrics_report(scores, data.labels, thresholds, ks=tuple(cfg.eval.ks), buckets=label_stats.buckets,
                            propensities=label_stats.propensities)
    return {"checkpoint": str(checkpoint), "data": str(data_path), "num_examples": len(data), **report}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmlc.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a .pt checkpoint or a run directory (uses best.pt)")
    parser.add_argument("--data", required=True, help="labelled file in any format the run trained on "
                                                      "(XMC, .csv/.tsv/.jsonl, LibMultiLabel, .npy/.npz; .gz ok)")
    parser.add_argument("--labels", help="labels file of a .npy/.npz feature matrix (one line per row)")
    parser.add_argument("overrides", nargs="*", metavar="data.key=value",
                        help="changes to the checkpoint's data section for reading --data, e.g. data.text_column=body")
    parser.add_argument("--out", help="JSON output (default: <checkpoint dir>/eval-<data file name>.json)")
    parser.add_argument("--batch-size", type=positive_int, help=f"scoring batch size (default: {xdata.EVAL_BATCH_SIZE})")
    parser.add_argument("--device", type=device_name, default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    checkpoint = checkpoint_path(args.checkpoint, "best.pt")   # a run directory means its best model
    notes: list[str] = []
    try:
        bad = [o for o in args.overrides if not o.startswith("data.")]
        if bad:
            raise ConfigError(f"evaluate takes data.<key>=value overrides only; got {bad[0]!r}")
        results = evaluate_checkpoint(checkpoint, args.data, batch_size=args.batch_size, device=args.device,
                                      labels_path=args.labels, overrides=args.overrides, notes=notes)
    except Exception as exc:   # bad input: one line and its status (xmlc.cli); anything else: traceback
        return report_error(exc, INPUT_ERRORS)
    for note in notes:
        print(note, file=sys.stderr)
    columns = [("@0.5", results["at_0.5"])]
    if "calibrated" in results:
        columns.append(("calibrated", results["calibrated"]))
    else:
        print(f"note: {checkpoint} has no calibrated thresholds (those are saved in best.pt at the end "
              f"of a run); showing 0.5 only", file=sys.stderr)
    if "prior" in results:
        columns.append(("ln(pos_weight)", results["prior"]))
    print(f"{results['data']}: {results['num_examples']:,} examples")
    print(metrics_table(columns, title="metric"))
    out = Path(args.out) if args.out else checkpoint.parent / f"eval-{Path(args.data).name}.json"
    try:
        write_json(out, results)   # NaN -> null (xmlc._json)
    except OSError as exc:
        hint = "" if args.out else "; give --out PATH to write it elsewhere"
        return report_error(OSError(f"{'--out: ' if args.out else ''}{exc}{hint}"), INPUT_ERRORS)
    print(f"wrote {out}")
    return ExitStatus.OK


if __name__ == "__main__":
    sys.exit(main())
