"""Predict labels for a file: ``python -m xmlc.predict --checkpoint C --data FILE --top-k K --out OUT``.

Writes one JSON object per input row (JSON lines), in input order::

    {"row": 0, "top_k": [[label, score], ...], "predicted": [label, ...]}

``top_k`` holds the K highest-scoring labels with their probabilities, best first;
``predicted`` the labels whose probability reaches the checkpoint's calibrated per-label
threshold (0.5 when the checkpoint has none; ``--threshold 0.5`` forces a global one).
With ``--label-names FILE`` (one name per line) labels are written as names. The labels
in FILE, if any, are ignored. Rows are scored batch by batch, so memory does not grow with FILE.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from xmlc import data as xdata
from xmlc.checkpoint import checkpoint_path, load_checkpoint, model_from_checkpoint
from xmlc.data import DataFileError, read_data
from xmlc.models import probabilities

__all__ = ["main", "predict_file"]


@torch.no_grad()
def predict_file(checkpoint: str | Path, data_path: str | Path, out_path: str | Path, *, top_k: int = 5,
                 threshold: float | None = None, label_names: list[str] | None = None,
                 batch_size: int | None = None, device: str = "cpu") -> int:
    """Write JSON-lines predictions for every row of ``data_path``; returns the number of rows."""
    if top_k < 0:
        raise ValueError(f"--top-k must be >= 0, got {top_k}")
    device = torch.device(device)
    ckpt = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(ckpt, device)
    num_labels = ckpt["num_labels"]
    if label_names is not None and len(label_names) != num_labels:
        raise ValueError(f"--label-names has {len(label_names)} names, the model has {num_labels} labels")
    if threshold is not None:
        thresholds = torch.full((num_labels,), float(threshold))
    elif ckpt.get("thresholds") is not None:
        thresholds = ckpt["thresholds"].float()
    else:
        print(f"note: {checkpoint} has no calibrated thresholds; using 0.5", file=sys.stderr)
        thresholds = torch.full((num_labels,), 0.5)
    thresholds = thresholds.to(device)
    data = read_data(data_path, cfg.data, key="--data", num_features=ckpt["num_features"], num_labels=num_labels)
    loader = xdata.make_loader(data, batch_size or cfg.data.eval_batch_size, shuffle=False,
                               pin_memory=device.type == "cuda")
    k = min(top_k, num_labels)
    name = (lambda i: label_names[i]) if label_names is not None else (lambda i: i)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    amp = cfg.train.amp and device.type == "cuda"
    with open(out_path, "w") as out:
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                probs = probabilities(model(batch))
            top_scores, top_labels = probs.topk(k, dim=1)
            chosen = probs >= thresholds
            for row, labels, scores, mask in zip(batch.row_ids.tolist(), top_labels.tolist(),
                                                 top_scores.tolist(), chosen.cpu()):
                record = {"row": row,
                          "top_k": [[name(l), round(s, 6)] for l, s in zip(labels, scores)],
                          "predicted": [name(l) for l in mask.nonzero().flatten().tolist()]}
                out.write(json.dumps(record) + "\n")
    return len(data)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmlc.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a .pt checkpoint or a run directory (uses best.pt)")
    parser.add_argument("--data", required=True, help="file in XMC / libsvm format (labels optional)")
    parser.add_argument("--top-k", type=int, default=5, help="labels per row in top_k (default 5)")
    parser.add_argument("--out", required=True, help="output file, JSON lines")
    parser.add_argument("--threshold", type=float, help="one global probability threshold instead of "
                                                        "the checkpoint's calibrated ones")
    parser.add_argument("--label-names", help="file with one label name per line")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    checkpoint = checkpoint_path(args.checkpoint, "best.pt")   # a run directory means its best model
    try:
        names = Path(args.label_names).read_text().splitlines() if args.label_names else None
        n = predict_file(checkpoint, args.data, args.out, top_k=args.top_k, threshold=args.threshold,
                         label_names=names, batch_size=args.batch_size, device=args.device)
    except (DataFileError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n:,} predictions to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
