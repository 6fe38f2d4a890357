"""Building a saved model for prediction: with the random initialisation (before) against
``xmlc.models.weights_to_load`` (now), each followed by loading the weights.

    python benchmarks/bench_load.py --features 152000 --labels 593 --hidden 512 --rounds 3

The wide & deep model of ``configs/text.yaml`` at the given D, L and H (5 heads); its weights
are made once, then each round builds the model both ways in alternating order and loads them
with ``load_state_dict``. The ratio is the median of the per-round ratios. At the default size
(the held-out raw-text set of issue 21: 152,000 tf-idf features, 593 tags) the model holds
170M weights, 650 MB. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xmlc.config import ModelConfig  # noqa: E402
from xmlc.models import build_model, weights_to_load  # noqa: E402


def build_and_load(cfg: ModelConfig, D: int, L: int, weights: dict, *, skip_init: bool) -> float:
    start = time.perf_counter()
    if skip_init:
        with weights_to_load():
            model = build_model(cfg, num_features=D, num_labels=L)
    else:
        model = build_model(cfg, num_features=D, num_labels=L)
    model.load_state_dict(weights)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=152_000)
    parser.add_argument("--labels", type=int, default=593)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ModelConfig(name="wide_deep", hidden=[args.hidden], ensemble=5)
    weights = {k: v.clone() for k, v in build_model(cfg, args.features, args.labels).state_dict().items()}
    size_mb = sum(v.numel() * v.element_size() for v in weights.values()) / 2**20
    times = {"init": [], "load": []}
    for r in range(args.rounds):
        for skip in ((False, True) if r % 2 == 0 else (True, False)):
            times["load" if skip else "init"].append(build_and_load(cfg, args.features, args.labels, weights,
                                                                    skip_init=skip))
    ratios = [b / a for a, b in zip(times["init"], times["load"])]
    print(f"wide & deep D = {args.features:,}, L = {args.labels:,}, H = {args.hidden}, 5 heads: {size_mb:,.0f} MB of "
          f"weights; {args.threads} threads, {args.rounds} rounds\n")
    print("| build + load_state_dict | median s | now / before (median, range) |")
    print("|---|---:|---:|")
    print(f"| with the random initialisation (before) | {statistics.median(times['init']):.2f} | |")
    print(f"| under `weights_to_load` (now) | {statistics.median(times['load']):.2f} | {statistics.median(ratios):.3f} "
          f"({min(ratios):.3f}-{max(ratios):.3f}) |")


if __name__ == "__main__":
    main()
