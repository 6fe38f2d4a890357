"""GPU: seed-scenario training epoch time, examples/s and peak GPU memory, AMP on/off, sparse vs
dense first layer; plus the text recipe's step on Zipf batches at D = 50,000 (5 members).

Seed scenario: ``configs/seed.yaml`` (synthetic 80k x 7,900 labels, D = 5,000, MLP 512, batch
256). For each setting (``train.amp`` on/off x ``optim.sparse`` true/false) it trains one warm-up
epoch, then times ``--epochs`` epochs of ``xmlc.train.train_one_epoch`` on the GPU (data loading
from the CSR matrix included, as in a run; validation not included), with the peak memory
allocated on the GPU (``torch.cuda.max_memory_allocated``) over the timed epochs. Settings run in
turn, not interleaved: a GPU is not shared the way the CPU box is.

Prints one Markdown table; without a CUDA device it says so and exits with status 0.

    python benchmarks/bench_gpu.py [--epochs 1 --text-steps 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from xmlc import data as xdata, losses
from xmlc.config import load_config
from xmlc.models import build_model
from xmlc.optim import build_optimizer, build_scheduler, optimizer_state_bytes
from xmlc.run import Progress
from xmlc.train.distributed import DistEnv
from xmlc.train.epoch import train_one_epoch

ROOT = Path(__file__).resolve().parents[1]


class _NoStop:
    requested = False


def epochs(cfg, data, device, n: int) -> tuple[float, float, float]:
    """(seconds per timed epoch, peak GPU MiB, optimizer state MiB) after one warm-up epoch."""
    torch.manual_seed(0)
    model = build_model(cfg.model, data.num_features, data.num_labels).to(device)
    optimizer = build_optimizer(cfg.optim, model)
    steps = -(-len(data) // cfg.data.batch_size)
    scheduler = build_scheduler(cfg.optim, optimizer, total_steps=steps * (n + 1))
    loss_fn = losses.build_loss(cfg.loss).to(device)
    loader = xdata.make_loader(data, cfg.data.batch_size, shuffle=True, seed=0, pin_memory=True)
    env, progress = DistEnv(device=device), Progress()

    def one() -> None:
        train_one_epoch(model, loader, loss_fn, optimizer, scheduler, progress=progress, tcfg=cfg.train,
                        grad_clip=cfg.optim.grad_clip, env=env, stop=_NoStop(), writer=None)

    one()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        one()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**20, optimizer_state_bytes(optimizer) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per setting (after one warm-up)")
    parser.add_argument("--text-rows", type=int, default=12_800, help="rows of the Zipf text case (0: skip it)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing measured (this script only times GPU training)")
        return
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}\n")
    print("| case | AMP (bf16) | first layer | epoch (s) | examples/s | peak GPU memory (MiB) | optimizer state (MiB) |")
    print("|---|---|---|---:|---:|---:|---:|")

    cfg = load_config(ROOT / "configs" / "seed.yaml")
    cfg.train.log_every = 10**9
    train, _, _ = xdata.load_splits(cfg.data, seed=0)
    cases = [("seed scenario", cfg, train)]
    if args.text_rows:
        from bench_train import recipe_config, zipf_data
        text = recipe_config()
        text.train.log_every = 10**9
        cases.append(("text recipe, Zipf D = 50,000", text, zipf_data(args.text_rows, 50_000, 100)))
    for name, case_cfg, data in cases:
        for amp in (False, True):
            for sparse in (False, True):
                case_cfg.train.amp, case_cfg.optim.sparse = amp, sparse
                seconds, peak, state = epochs(case_cfg, data, device, args.epochs)
                print(f"| {name} ({len(data):,} rows) | {'on' if amp else 'off'} | "
                      f"{'sparse rows' if sparse else 'dense'} | {seconds:.2f} | {len(data) / seconds:,.0f} | "
                      f"{peak:,.0f} | {state:,.0f} |", flush=True)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
