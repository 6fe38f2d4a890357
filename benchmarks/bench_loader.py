"""Batches for training: the DataLoader path (``xmlc.data.make_loader``: CSR rows sliced by scipy
per batch, then copied to the device) against the device-resident path the trainer uses
(``xmlc.data.DeviceLoader``: the split on the device once, batches gathered there), on the CPU.

Data: seed-scenario shaped (``xmlc.data.synthetic_preset("seed")`` subsampled to ``--rows`` rows:
7,900 labels, ~130 per row, 5,000 sparse features), batch 256, the seed config's MLP.

The device-resident loader runs twice: as the trainer runs it on the CPU (``engine="auto"``:
scipy's row gather of a window of batches) and with the index-arithmetic gather it uses on a GPU
(``engine="torch"``), to show why the CPU takes the first.

* ``batches only``: iterate one epoch of batches (a new seeded order per round), nothing else.
* ``train_one_epoch``: the trainer's epoch (forward, loss, backward, clip, AdamW, schedule) over
  the same rows, data loading included.

Each round times the paths back to back (the order alternating between rounds); the table
gives median seconds per epoch and the median of the per-round ratios (DataLoader / each).
Prints one Markdown table.

    python benchmarks/bench_loader.py [--rows 16384 --rounds 7 --threads 1 --cases batches,epoch]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from xmlc import data as xdata, losses  # noqa: E402
from xmlc.config import load_config  # noqa: E402
from xmlc.models import build_model  # noqa: E402
from xmlc.optim import build_optimizer, build_scheduler  # noqa: E402
from xmlc.run import Progress  # noqa: E402
from xmlc.train.distributed import DistEnv, ResumableSampler  # noqa: E402
from xmlc.train.epoch import train_one_epoch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class _NoStop:
    requested = False


def loaders(data, batch_size: int, sampler) -> dict:
    return {"DataLoader": lambda: xdata.make_loader(data, batch_size, shuffle=False, sampler=sampler),
            "device": lambda: xdata.DeviceLoader(data, batch_size, sampler=sampler, device="cpu"),
            "device, torch gather": lambda: xdata.DeviceLoader(data, batch_size, sampler=sampler, device="cpu",
                                                               engine="torch")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16_384)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default="batches,epoch", help="batches (iterate only), epoch (train_one_epoch)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(ROOT / "configs" / "seed.yaml")
    cfg.train.log_every = 10**9
    data = xdata.synthetic_preset("seed")
    data = xdata.XMCData(data.features[:args.rows], data.labels[:args.rows], data.num_features, data.num_labels)
    sampler = ResumableSampler(data, DistEnv(), seed=0, batch_size=cfg.data.batch_size)
    made = {name: make() for name, make in loaders(data, cfg.data.batch_size, sampler).items()}
    torch.manual_seed(0)
    model = build_model(cfg.model, data.num_features, data.num_labels)
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.optim, optimizer, total_steps=10**6)
    loss_fn = losses.build_loss(cfg.loss)

    def only_batches(loader) -> None:
        for _ in loader:
            pass

    def epoch(loader) -> None:
        train_one_epoch(model, loader, loss_fn, optimizer, scheduler, progress=Progress(), tcfg=cfg.train,
                        grad_clip=cfg.optim.grad_clip, env=DistEnv(), stop=_NoStop())

    print(f"{len(data):,} rows x {data.num_labels:,} labels, batch {cfg.data.batch_size}, "
          f"{args.threads} thread(s), {args.rounds} interleaved rounds, torch {torch.__version__}\n")
    print("| what | DataLoader (s/epoch) | DeviceLoader, auto = scipy gather on CPU (s/epoch) | DataLoader / "
          "DeviceLoader (median of rounds) | DeviceLoader, torch gather (s/epoch) | DataLoader / torch gather |")
    print("|---|---:|---:|---:|---:|---:|")
    cases = {"batches": ("batches only", only_batches), "epoch": ("train_one_epoch", epoch)}
    for what, fn in (cases[c] for c in args.cases.split(",")):
        times = {name: [] for name in made}
        for r in range(args.rounds + 1):
            sampler.set_epoch(r)
            for name in (list(made) if r % 2 else list(made)[::-1]):
                start = time.perf_counter()
                fn(made[name])
                if r:   # round 0 warms up
                    times[name].append(time.perf_counter() - start)
        med = {name: statistics.median(t) for name, t in times.items()}
        ratio = {name: statistics.median(a / b for a, b in zip(times["DataLoader"], t)) for name, t in times.items()}
        print(f"| {what} | {med['DataLoader']:.3f} | {med['device']:.3f} | {ratio['device']:.2f}x "
              f"| {med['device, torch gather']:.3f} | {ratio['device, torch gather']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
