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
import json
import sys
from pathlib import Path

import torch

from xmlc import calibrate, data as xdata, metrics, stats
from xmlc.checkpoint import checkpoint_path, load_checkpoint, model_from_checkpoint
from xmlc.data import DataFileError, read_data
from xmlc.inference import predict_scores
from xmlc.metrics import metrics_table, threshold_metrics

__all__ = ["main", "evaluate_checkpoint"]


def evaluate_checkpoint(checkpoint: str | Path, data_path: str | Path, *, batch_size: int | None = None,
                        device: str = "cpu") -> dict:
    """Metrics of the checkpoint's model on ``data_path``.

    Returns:
        ``{"at_0.5": {...}, "calibrated": {...} (if thresholds), "prior": {...} (if pos_weight),
        "checkpoint": str, "data": str, "num_examples": int}`` with the names of
        :func:`xmlc.metrics.evaluate_all`.
    """
    device = torch.device(device)
    ckpt = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(ckpt, device)
    data = read_data(data_path, cfg.data, key="--data", num_features=ckpt["num_features"],
                     num_labels=ckpt["num_labels"])
    loader = xdata.make_loader(data, batch_size or cfg.data.eval_batch_size, shuffle=False,
                               pin_memory=device.type == "cuda")
    scores = predict_scores(model, loader, len(data), device=device, amp=cfg.train.amp)
    label_stats = ckpt["label_stats"]
    counts, num_train = label_stats["counts"].numpy(), label_stats["num_examples"]
    buckets = stats.frequency_buckets(counts)
    at_half = metrics.evaluate_all(scores, data.labels, thresholds=0.5, ks=tuple(cfg.eval.ks), buckets=buckets,
                                   propensities=stats.propensity(counts, num_train))
    at_half = {k: float(v) for k, v in at_half.items()}
    results = {"checkpoint": str(checkpoint), "data": str(data_path), "num_examples": len(data),
               "at_0.5": at_half}
    if ckpt.get("thresholds") is not None:
        results["calibrated"] = at_half | threshold_metrics(scores, data.labels, ckpt["thresholds"], buckets)
    if label_stats.get("pos_weight") is not None:
        prior = calibrate.prior_thresholds(label_stats["pos_weight"])
        results["prior"] = at_half | threshold_metrics(scores, data.labels, prior, buckets)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmlc.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a .pt checkpoint or a run directory (uses best.pt)")
    parser.add_argument("--data", required=True, help="labelled file in XMC format (.gz ok)")
    parser.add_argument("--out", help="JSON output (default: <checkpoint dir>/eval-<data file name>.json)")
    parser.add_argument("--batch-size", type=int, help="scoring batch size (default: data.eval_batch_size)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    checkpoint = checkpoint_path(args.checkpoint, "best.pt")   # a run directory means its best model
    try:
        results = evaluate_checkpoint(checkpoint, args.data, batch_size=args.batch_size, device=args.device)
    except (DataFileError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
