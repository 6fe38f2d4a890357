"""Examples/s of one training step: xmlc's full step vs the loop a tutorial writes.

Model: MLP 5,000-512-7,900 (ReLU, no norm, no dropout) at batch 256 on seed-scenario-shaped
data (130 labels per example, 7,900 labels, 5,000 sparse features).

* tutorial: the whole data set as dense tensors ``X (N, 5000)``, ``Y (N, 7900)``; per step
  ``X[idx]``, ``Y[idx]``, ``nn.Linear`` layers, ``BCEWithLogitsLoss``, AdamW,
  ``running_loss += loss.item()``.
* tutorial + fused: the same loop with ``AdamW(fused=True)``, the optimizer xmlc builds.
* xmlc: :func:`xmlc.train.train_one_epoch` itself over a loader of the same number of
  batches: CSR rows sliced per batch into EmbeddingBag inputs and a dense (B, L) target
  (data loading included, in the training process), the same MLP with an EmbeddingBag
  first layer, ``xmlc.losses`` BCE, non-finite check, gradient clipping, AdamW, LR schedule.

Both run in the same process, interleaved in rounds of ``--steps`` steps; the table gives
median examples/s and the median of the per-round ratios. The loader share is the time to
iterate the same loader alone over the xmlc block time.

    python benchmarks/bench_train.py [--rounds 7 --steps 20 --rows 8192]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from xmlc import data as xdata, losses
from xmlc.config import Config
from xmlc.models import build_model
from xmlc.optim import build_optimizer, build_scheduler
from xmlc.train import DistEnv, Progress, train_one_epoch


class _NoStop:
    requested = False


def xmlc_block(model, loss_fn, optimizer, scheduler, data, indices, cfg) -> float:
    loader = xdata.make_loader(data, cfg.data.batch_size, shuffle=False, sampler=indices)
    start = time.perf_counter()
    train_one_epoch(model, loader, loss_fn, optimizer, scheduler, progress=Progress(), tcfg=cfg.train,
                    grad_clip=cfg.optim.grad_clip, env=DistEnv(), stop=_NoStop(), writer=None)
    return time.perf_counter() - start


def loader_block(data, indices, batch_size) -> float:
    loader = xdata.make_loader(data, batch_size, shuffle=False, sampler=indices)
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def tutorial_block(model, criterion, optimizer, X, Y, indices, batch_size) -> float:
    start = time.perf_counter()
    running_loss = 0.0
    model.train()
    for i in range(0, len(indices), batch_size):
        idx = indices[i:i + batch_size]
        xb, yb = X[idx], Y[idx]
        logits = model(xb)
        loss = criterion(logits, yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--rows", type=int, default=8192, help="examples generated (seed-scenario shape)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=512)
    args = parser.parse_args()
    torch.manual_seed(0)

    data = xdata.synthetic(args.rows, 5_000, 7_900, mean_labels=130.0, max_freq=0.15, seed=0)
    D, L, B = data.num_features, data.num_labels, args.batch_size
    cfg = Config()
    cfg.data.batch_size = B
    cfg.model.hidden, cfg.model.dropout, cfg.model.norm = [args.hidden], 0.0, "none"
    cfg.train.progress, cfg.train.log_every = False, 10**9
    ours = build_model(cfg.model, D, L)
    ours_loss = losses.build_loss(cfg.loss)
    ours_opt = build_optimizer(cfg.optim, ours)
    ours_sched = build_scheduler(cfg.optim, ours_opt, total_steps=10**6)

    X = torch.from_numpy(data.features.toarray())          # the tutorial's dense tensors
    Y = torch.from_numpy(data.labels.toarray())
    tutorial = nn.Sequential(nn.Linear(D, args.hidden), nn.ReLU(), nn.Linear(args.hidden, L))
    tutorial_opt = torch.optim.AdamW(tutorial.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    criterion = nn.BCEWithLogitsLoss()
    # the same tutorial loop with the one optimizer flag xmlc sets, to show where the gain comes from
    tutorial_f = nn.Sequential(nn.Linear(D, args.hidden), nn.ReLU(), nn.Linear(args.hidden, L))
    tutorial_f_opt = torch.optim.AdamW(tutorial_f.parameters(), lr=cfg.optim.lr,
                                       weight_decay=cfg.optim.weight_decay, fused=True)

    n = args.steps * B
    gen = torch.Generator().manual_seed(0)
    rates_ours, rates_tut, rates_fused, ratios, shares = [], [], [], [], []
    for r in range(args.rounds + 1):                       # round 0 warms up
        idx = torch.randint(0, args.rows, (n,), generator=gen)
        t_ours = xmlc_block(ours, ours_loss, ours_opt, ours_sched, data, idx.tolist(), cfg)
        t_tut = tutorial_block(tutorial, criterion, tutorial_opt, X, Y, idx, B)
        t_fused = tutorial_block(tutorial_f, criterion, tutorial_f_opt, X, Y, idx, B)
        t_load = loader_block(data, idx.tolist(), B)
        if r == 0:
            continue
        rates_ours.append(n / t_ours)
        rates_tut.append(n / t_tut)
        rates_fused.append(n / t_fused)
        ratios.append(t_tut / t_ours)
        shares.append(t_load / t_ours)

    med = statistics.median
    print(f"MLP {D:,}-{args.hidden}-{L:,}, batch {B}, {args.rounds} rounds x {args.steps} steps, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{data.labels.nnz / args.rows:.0f} labels/example, {data.features.nnz / args.rows:.0f} features/example\n")
    print("| loop | examples/s (median) | ms/step | min-max examples/s |")
    print("|---|---:|---:|---:|")
    for name, rates in (("tutorial: dense X, Y tensors, nn.Linear, BCEWithLogitsLoss", rates_tut),
                        ("same tutorial loop with AdamW(fused=True)", rates_fused),
                        ("xmlc: train_one_epoch incl. CSR->batch loading", rates_ours)):
        print(f"| {name} | {med(rates):,.0f} | {1000 * B / med(rates):.1f} | "
              f"{min(rates):,.0f}-{max(rates):,.0f} |")
    print(f"\nxmlc / tutorial speed ratio (median of per-round ratios): {med(ratios):.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"loader share of the xmlc step: {100 * med(shares):.1f}% (range {100 * min(shares):.1f}-"
          f"{100 * max(shares):.1f}%)")


if __name__ == "__main__":
    main()
