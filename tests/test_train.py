"""xmlc.train / evaluate / predict: CLI smoke runs on tiny generated data, resume equivalence,
TensorBoard events read back, NaN stop, signals, bad config and data, 2-process DDP."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from xmlc import data as xdata, losses
from xmlc import api as xapi, evaluate as xevaluate, predict as xpredict
from xmlc.train import loop as xtrain
from xmlc.models import auto_hidden
from xmlc.run import LabelStats, Progress, RunArtifact
from xmlc.train.selection import end_epoch, patience_ran_out
from xmlc.config import Config, from_dict
from xmlc.recipe import PROFILES, auto_epochs
from xmlc.config import load_config
from xmlc.train.build import new_model, seed_everything, start_training
from xmlc.train.final import FINETUNE_EPOCHS, FINETUNE_LR
from xmlc.train.distributed import DistEnv
from xmlc.train.epoch import native_bf16, train_one_epoch
from xmlc.train.folds import crossfit_folds
from xmlc.checkpoint import load_checkpoint
from xmlc.eval.calibrate import transfer_thresholds
from xmlc.cli import ExitStatus
from conftest import write_xmc_splits

ROOT = Path(__file__).resolve().parents[1]
STABLE_NAMES = {"auprc_micro", "auprc_macro", "p@1", "p@3", "p@5", "f1_micro", "f1_macro",
                "positive_rate_ratio", "auprc_macro_head", "auprc_macro_torso", "auprc_macro_tail"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny XMC files: 240 train / 64 val / 64 test rows, 40 features, 12 labels."""
    return write_xmc_splits(tmp_path_factory.mktemp("data"), (240, 64, 64), num_features=40, seed=0)


@pytest.fixture(scope="module")
def wide_files(tmp_path_factory):
    """The same row counts with an input table wide enough for the sparse row updates."""
    from xmlc.optim import SPARSE_MIN_ROWS
    return write_xmc_splits(tmp_path_factory.mktemp("wide"), (240, 64, 64), num_features=SPARSE_MIN_ROWS, seed=0)


def tiny(files, out, *extra):
    """Overrides for a run of a couple of seconds: 4 steps per epoch, 2 epochs."""
    return [f"data.train={files['train']}", f"data.val={files['val']}", f"data.test={files['test']}",
            "model.hidden=[16]", "data.batch_size=64", "train.epochs=2",
            "train.log_every=1", "eval.min_positives=1",
            "optim.lr=0.01", f"output.dir={out}", *extra]


def params(path) -> dict:
    return load_checkpoint(path)["model"]


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    """One finished in-process run with pos_weight, reused by several tests."""
    out = tmp_path_factory.mktemp("run")
    assert xtrain.main(tiny(files, out, "loss.pos_weight=sqrt_neg_pos")) == 0
    return out


def test_cli_smoke_run_writes_all_outputs(files, tmp_path):
    out = tmp_path / "cli"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "xmlc.train", *tiny(files, out, "output.tensorboard=false")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"outputs: {out.resolve()}/" in proc.stdout
    assert "| test | @0.5 | calibrated |" in proc.stdout
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "last.pt", "best.pt", "metrics.json"}
    result = json.loads((out / "metrics.json").read_text())
    for split in ("val", "val_calibrated", "test", "test_calibrated"):
        assert STABLE_NAMES <= set(result[split]), split
    assert result["epochs"] == 2 and result["steps"] == 8 and result["peak_rss_mb"] > 0
    best = load_checkpoint(out / "best.pt")
    num_features = best["num_features"]   # the input table (D, 16) holds the largest Adam moments: 2 x D x 16 float32
    largest = result["optimizer_state"]["largest"]
    assert (largest["parameter"], largest["shape"]) == ("input.bag.weight", [num_features, 16])
    assert largest["mb"] == pytest.approx(2 * num_features * 16 * 4 / 2**20, abs=8 / 2**20)   # + the step counter
    assert result["optimizer_state"]["total_mb"] > largest["mb"]
    assert best["thresholds"].shape == (12,) and best["config"]["output"]["dir"] == str(out)


def test_metrics_json_and_prior_column(trained):
    result = json.loads((trained / "metrics.json").read_text())
    assert "test_prior" in result                                   # pos_weight was used
    assert result["test"]["auprc_macro"] == result["test_calibrated"]["auprc_macro"]
    assert 0.0 <= result["test"]["auprc_micro"] <= 1.0
    assert result["best_epoch"] in (1, 2)


def test_tensorboard_events_read_back(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    expected = {"train/loss", "train/lr", "train/grad_norm", "train/examples_per_s", "val/auprc_micro",
                "val/auprc_macro", "val/p@1", "val/p@5", "val/f1_micro", "val/positive_rate_ratio",
                "val/auprc_macro_head", "val/auprc_macro_tail", "val_calibrated/f1_micro",
                "val_calibrated/f1_macro", "val_calibrated/positive_rate_ratio"}
    assert expected <= set(tags["scalars"]), expected - set(tags["scalars"])
    assert {"val/ap_per_label", "label_stats/pos_weight_neg_pos", "label_stats/pos_weight_used"} <= set(tags["histograms"])
    assert "val/pr_curve_micro" in tags["tensors"] and "config/text_summary" in tags["tensors"]

    history = load_checkpoint(trained / "last.pt")["progress"]["history"]
    logged = acc.Scalars("val/auprc_macro")
    assert [e.step for e in logged] == [h["step"] for h in history] == [4, 8]
    for event, h in zip(logged, history):
        assert event.value == pytest.approx(h["auprc_macro"], rel=1e-6)
    losses_logged = acc.Scalars("train/loss")
    assert [e.step for e in losses_logged] == list(range(1, 9))
    assert all(math.isfinite(e.value) and e.value > 0 for e in losses_logged)
    lrs = [e.value for e in acc.Scalars("train/lr")]
    assert max(lrs) == pytest.approx(0.01) and lrs[-1] < 1e-3        # warmup + cosine to 0

    hp = EventAccumulator(str(trained / "hparams"))
    hp.Reload()
    result = json.loads((trained / "metrics.json").read_text())
    f1 = hp.Scalars("hparams/test_calibrated/f1_micro")[0].value
    assert f1 == pytest.approx(result["test_calibrated"]["f1_micro"], rel=1e-6)


def test_evaluate_and_predict_from_checkpoint_alone(trained, files, tmp_path, capsys):
    out_json = tmp_path / "eval.json"
    assert xevaluate.main(["--checkpoint", str(trained), "--data", str(files["test"]), "--out", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "| metric | @0.5 | calibrated | ln(pos_weight) |" in printed
    evaluated = json.loads(out_json.read_text())
    reference = json.loads((trained / "metrics.json").read_text())
    for name in ("auprc_macro", "p@1", "f1_micro"):   # same model, same file, same thresholds
        assert evaluated["calibrated"][name] == pytest.approx(reference["test_calibrated"][name], abs=1e-6)

    pred = tmp_path / "pred.jsonl"
    assert xpredict.main(["--checkpoint", str(trained / "best.pt"), "--data", str(files["test"]),
                          "--top-k", "3", "--out", str(pred)]) == 0
    rows = [json.loads(line) for line in pred.read_text().splitlines()]
    assert [r["row"] for r in rows] == list(range(64))
    assert all(len(r["top_k"]) == 3 and r["top_k"][0][1] >= r["top_k"][-1][1] for r in rows)
    thresholds = load_checkpoint(trained / "best.pt")["thresholds"]
    first = rows[0]
    assert all(s >= thresholds[l] for l, s in first["top_k"] if l in first["predicted"])
    n_predicted = sum(len(r["predicted"]) for r in rows)
    ratio = evaluated["calibrated"]["positive_rate_ratio"]
    n_true = xdata.read_xmc(files["test"]).labels.nnz
    assert n_predicted == pytest.approx(ratio * n_true, abs=0.5)


def test_ensemble_run_evaluates_and_predicts_from_checkpoint(files, tmp_path):
    out = tmp_path / "ens"
    assert xtrain.main(tiny(files, out, "model.ensemble=2", "output.tensorboard=false")) == 0
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["model"]["head.weight"].shape[0] == 2      # both members, computed as one model
    out_json = tmp_path / "eval.json"
    assert xevaluate.main(["--checkpoint", str(out), "--data", str(files["test"]), "--out", str(out_json)]) == 0
    evaluated = json.loads(out_json.read_text())
    reference = json.loads((out / "metrics.json").read_text())
    assert evaluated["calibrated"]["auprc_macro"] == pytest.approx(reference["test_calibrated"]["auprc_macro"], abs=1e-6)
    pred = tmp_path / "pred.jsonl"
    assert xpredict.main(["--checkpoint", str(out / "best.pt"), "--data", str(files["test"]),
                          "--top-k", "2", "--out", str(pred)]) == 0
    assert all(0.0 <= s <= 1.0 for line in pred.read_text().splitlines() for _, s in json.loads(line)["top_k"])


@pytest.mark.parametrize("final", ["none", "crossfit"])
def test_resume_matches_uninterrupted_run(wide_files, tmp_path, final):
    files = wide_files   # the lazy row updates of a wide table resume bit-exactly too
    extra = ("model.dropout=0.3", "model.input_dropout=0.1", "output.tensorboard=false", "model.ensemble=2",
             f"train.final={final}", "data.batch_size=76")   # 4 steps an epoch on 240 or 304 rows
    full, part = tmp_path / "full", tmp_path / "part"
    assert xtrain.main(tiny(files, full, *extra)) == 0
    # stop mid-way through epoch 2 (step 6 of 8), after one evaluation and best.pt
    assert xtrain.main(tiny(files, part, *extra, "train.max_steps=6")) == 0
    stopped = load_checkpoint(part / "last.pt")
    assert (stopped["step"], stopped["epoch"], stopped["progress"]["batch_in_epoch"]) == (6, 1, 2)
    assert not (part / "metrics.json").exists()
    assert xtrain.main(["--resume", str(part), "train.max_steps=null"]) == 0
    a, b = params(full / "last.pt"), params(part / "last.pt")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (full, part))
    assert ma["test_calibrated"] == mb["test_calibrated"]


@pytest.mark.parametrize("every, last_epochs", [("0", [1, 2, 3, 4]), ("3600", [1, 4])])
def test_checkpoints_written_every_save_every_s(files, tmp_path, monkeypatch, every, last_epochs):
    """last.pt after the first and the last epoch, and in between only once output.save_every_s
    have passed; best.pt (best weights, no training state) written with it when the best moved."""
    import xmlc.run
    writes, save = [], xmlc.run.save_checkpoint
    monkeypatch.setattr(xmlc.run, "save_checkpoint",
                        lambda ckpt, path: writes.append((path.name, ckpt["epoch"], "optimizer" in ckpt)) or save(ckpt, path))
    out = tmp_path / every
    assert xtrain.main(tiny(files, out, "train.epochs=4", "train.patience=0", "output.tensorboard=false",
                            f"output.save_every_s={every}")) == 0
    *during, final = writes
    assert final == ("best.pt", 4, False)   # the shipped model with its thresholds, no training state
    assert [epoch for name, epoch, _ in during if name == "last.pt"] == last_epochs
    best = [(epoch, has_optimizer) for name, epoch, has_optimizer in during if name == "best.pt"]
    assert best and not any(has_optimizer for _, has_optimizer in best)
    assert {epoch for epoch, _ in best} <= set(last_epochs)


def test_finished_best_pt_holds_weights_and_thresholds_only(trained):
    """best.pt is the shipped model: no Adam moments (2x the weights), schedule or RNG states."""
    best = load_checkpoint(trained / "best.pt")
    assert not {"optimizer", "scheduler", "rng"} & set(best)
    assert best["thresholds"] is not None and "head.weight" in best["model"]
    assert "optimizer" in load_checkpoint(trained / "last.pt")


def test_resume_from_best_weights_is_refused(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert xtrain.main(tiny(files, out, "train.max_steps=5", "output.tensorboard=false")) == 0
    assert "optimizer" not in load_checkpoint(out / "best.pt")   # stopped mid-run: best weights only
    assert xtrain.main(["--resume", str(out / "best.pt")]) == ExitStatus.USAGE
    assert "holds the best weights only" in capsys.readouterr().err


REFIT = ("model.dropout=0.3", "model.input_dropout=0.1", "output.tensorboard=false", "train.epochs=3")


@pytest.fixture(scope="module")
def refitted(files, tmp_path_factory):
    """The same 3-epoch run with ``train.final`` none and refit (run directories)."""
    plain, refit = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("refit")
    assert xtrain.main(tiny(files, plain, *REFIT)) == 0
    assert xtrain.main(tiny(files, refit, *REFIT, "train.final=refit")) == 0
    return plain, refit


def test_refit_keeps_the_selection_and_moves_the_first_phase_thresholds_by_rate(refitted, files):
    plain, refit = refitted
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (plain, refit))
    assert b["best_epoch"] == a["best_epoch"] and b["val_calibrated"] == a["val_calibrated"]
    assert b["test_before_refit"] == a["test_calibrated"]       # the selected model, before the refit
    assert b["test_calibrated"]["auprc_macro"] != a["test_calibrated"]["auprc_macro"]
    assert b["refit"]["epochs"] == b["best_epoch"] and b["refit"]["num_train"] == 240 + 64
    # the shipped thresholds: the first model's, each label predicted as often on the training rows
    # (all 240 here: under refit_sample's floor) by the refitted model as by the first one
    ta, tb = (load_checkpoint(d / "best.pt")["thresholds"] for d in (plain, refit))
    features = xdata.read_xmc(files["train"]).features
    before, after = (xapi.load(d).scores_of_features(features) for d in (plain, refit))
    assert not torch.equal(ta, tb)
    assert torch.allclose(tb, transfer_thresholds(ta, before, after), atol=1e-6)
    k_before, k_after, seen = (before >= ta).sum(0), (after >= tb - 1e-6).sum(0), (before >= ta).sum(0) > 0
    assert seen.any() and torch.equal(k_after[seen], k_before[seen])
    assert torch.equal(tb[~seen], ta[~seen])                      # a label never predicted keeps its threshold


def test_refit_is_the_selected_run_repeated_on_train_plus_val(refitted, files, tmp_path):
    _, refit = refitted
    result = json.loads((refit / "metrics.json").read_text())
    both = tmp_path / "both.txt"   # the train rows, then the validation rows
    train, val = xdata.read_xmc(files["train"]), xdata.read_xmc(files["val"])
    xdata.write_xmc(both, xdata.concat_data(train, val).features, xdata.concat_data(train, val).labels)
    steps = result["best_epoch"] * math.ceil(304 / 64)
    assert result["refit"]["steps"] == steps
    # a plain run on that file, stopped after the selected epochs of a schedule over train.epochs
    manual = tmp_path / "manual"
    assert xtrain.main(tiny(files, manual, *REFIT, f"data.train={both}", f"train.max_steps={steps}")) == 0
    a, b = params(manual / "last.pt"), params(refit / "best.pt")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # best.pt ships the refit weights with the thresholds moved to them
    out_json = tmp_path / "eval.json"
    assert xevaluate.main(["--checkpoint", str(refit), "--data", str(files["test"]), "--out", str(out_json)]) == 0
    evaluated = json.loads(out_json.read_text())
    for name in ("auprc_macro", "p@1", "f1_micro", "positive_rate_ratio"):
        assert evaluated["calibrated"][name] == pytest.approx(result["test_calibrated"][name], abs=1e-6)


@pytest.fixture(scope="module")
def finetuned(files, refitted, tmp_path_factory):
    """The run of ``refitted``'s plain one with ``train.final: finetune``."""
    out = tmp_path_factory.mktemp("finetune")
    assert xtrain.main(tiny(files, out, *REFIT, "train.final=finetune")) == 0
    return out


def test_finetune_continues_the_selected_model_on_train_plus_val_at_half_the_rates(refitted, finetuned, files):
    plain, tuned = refitted[0], finetuned
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (plain, tuned))
    assert b["best_epoch"] == a["best_epoch"] and b["test_before_finetune"] == a["test_calibrated"]
    assert b["finetune"]["epochs"] == FINETUNE_EPOCHS and b["finetune"]["num_train"] == 240 + 64
    assert b["finetune"]["steps"] == FINETUNE_EPOCHS * math.ceil(304 / 64)
    # the reference: the plain run's shipped (selected) weights, trained on train + val rows by
    # a fresh optimizer whose schedule spans FINETUNE_EPOCHS epochs of optim.lr halved
    cfg = load_config(tuned / "config.yaml", [f"optim.lr={0.01 * FINETUNE_LR}", f"train.epochs={FINETUNE_EPOCHS}"])
    train, val = xdata.read_xmc(files["train"]), xdata.read_xmc(files["val"])
    stats = LabelStats.of(train, cfg.loss)
    model = new_model(cfg.model, train.num_features, train.num_labels)
    model.load_state_dict(params(plain / "best.pt"))
    loss_fn = losses.build_loss(cfg.loss, pos_weight=stats.pos_weight, weight=stats.label_weight)
    env, stop = DistEnv(), SimpleNamespace(requested=None, signum=None)
    seed_everything(cfg.train.seed)
    tr = start_training(cfg, env, xdata.concat_data(train, val), model, loss_fn)
    for _ in range(FINETUNE_EPOCHS):
        tr.train_epoch(tcfg=cfg.train, grad_clip=cfg.optim.grad_clip, env=env, stop=stop)
        tr.progress.next_epoch()
    shipped = params(tuned / "best.pt")
    for name, value in model.state_dict().items():
        assert torch.allclose(value, shipped[name], atol=1e-6), name
    assert not torch.equal(shipped["head.weight"], params(plain / "best.pt")["head.weight"])
    # the thresholds moved to it by rate on the training rows, as after a refit
    features = train.features
    ta, tb = (load_checkpoint(d / "best.pt")["thresholds"] for d in (plain, tuned))
    before, after = (xapi.load(d).scores_of_features(features) for d in (plain, tuned))
    assert torch.allclose(tb, transfer_thresholds(ta, before, after), atol=1e-6)


def _faulty_loss(monkeypatch, at_call: int, action):
    """Make build_loss return the real loss, except that call ``at_call`` runs ``action(loss)``."""
    real = losses.build_loss
    calls = {"n": 0}

    def build(*args, **kwargs):
        inner = real(*args, **kwargs)

        class Faulty(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, logits, targets):
                calls["n"] += 1
                loss = self.inner(logits, targets)
                return action(loss) if calls["n"] == at_call else loss

        return Faulty()

    monkeypatch.setattr(losses, "build_loss", build)


CROSSFIT = ("model.dropout=0.3", "model.input_dropout=0.1", "output.tensorboard=false", "model.ensemble=3",
            "train.final=crossfit")


def _relabelled(files, tmp_path, rows) -> Path:
    """The validation file with the label sets of ``rows`` replaced (each by one other label)."""
    val = xdata.read_xmc(files["val"])
    labels = val.labels.tolil()
    for r in rows:
        old = set(labels.rows[r])
        labels[r, :] = 0
        labels[r, next(k for k in range(val.num_labels) if k not in old)] = 1
    path = tmp_path / "val_relabelled.txt"
    xdata.write_xmc(path, val.features, labels.tocsr())
    return path


def test_crossfit_member_never_learns_from_its_validation_rows(files, tmp_path):
    """Member 0's weights do not depend on the labels of the validation rows it leaves out; the
    other members' do (they train on those rows)."""
    train, val = xdata.read_xmc(files["train"]), xdata.read_xmc(files["val"])
    fit, folds = crossfit_folds(train, val, 3, seed=0)
    assert len(fit) == 240 + 64 and torch.equal(folds.held_out_by[:240], torch.full((240,), -1))
    assert torch.equal(folds.held_out_by[240:], folds.val_members)
    assert sorted(torch.bincount(folds.val_members).tolist()) == [21, 21, 22]   # dealt out evenly
    relabelled = _relabelled(files, tmp_path, torch.nonzero(folds.val_members == 0).flatten().tolist())
    a, b = tmp_path / "a", tmp_path / "b"
    assert xtrain.main(tiny(files, a, *CROSSFIT)) == 0
    assert xtrain.main(tiny(files, b, *CROSSFIT, f"data.val={relabelled}")) == 0
    wa, wb = params(a / "last.pt"), params(b / "last.pt")
    table_a, table_b = (w["input.bag.weight"].view(40, 3, 16) for w in (wa, wb))   # (D, M, H)
    assert torch.equal(table_a[:, 0], table_b[:, 0]) and torch.equal(wa["head.weight"][0], wb["head.weight"][0])
    assert not torch.equal(table_a[:, 1], table_b[:, 1])
    assert not torch.equal(wa["head.weight"][1:], wb["head.weight"][1:])


def test_crossfit_validates_each_row_with_the_member_that_left_it_out(files, tmp_path):
    out = tmp_path / "cf"
    assert xtrain.main(tiny(files, out, *CROSSFIT, "train.epochs=3")) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["crossfit"] == {"members": 3, "num_train": 304, "val_rows_per_member": [22, 21, 21]}
    assert "refit" not in result and result["steps"] == 3 * math.ceil(304 / 64)
    # the validation metrics of best.pt, recomputed here: row i scored by its member alone. The run
    # scores on its training device (CUDA where there is one), this recomputation on the CPU: both
    # in float32 (scoring never runs under bf16 autocast, which once moved this AUPRC by 2e-4 on a GPU)
    oof, mean = out_of_fold_auprc(out, files)
    assert result["val"]["auprc_macro"] == pytest.approx(oof, abs=1e-6)
    assert result["val"]["auprc_macro"] != pytest.approx(mean, abs=1e-6)
    # test is scored by the whole ensemble, as evaluate does from best.pt
    out_json = tmp_path / "eval.json"
    assert xevaluate.main(["--checkpoint", str(out), "--data", str(files["test"]), "--out", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["calibrated"]["auprc_macro"] == pytest.approx(
        result["test_calibrated"]["auprc_macro"], abs=1e-6)


def out_of_fold_auprc(run_dir: Path, files) -> tuple[float, float]:
    """Validation macro AUPRC of a crossfit run's best.pt, recomputed from its weights: (each row
    scored by the member that left it out, every row scored by the member mean)."""
    ckpt = load_checkpoint(run_dir / "best.pt")
    cfg = from_dict(Config, ckpt["config"])
    d, l = ckpt["num_features"], ckpt["num_labels"]
    model = new_model(cfg.model, d, l)
    model.load_state_dict(ckpt["model"])
    model.eval()
    val = xdata.read_data(files["val"], cfg.data, num_features=d, num_labels=l)
    batch = next(iter(xdata.make_loader(val, len(val), shuffle=False)))
    with torch.no_grad():
        member_probs = torch.sigmoid(model(batch).float())   # (M, N, L)
    members = crossfit_folds(val, val, cfg.model.ensemble, seed=cfg.train.seed)[1].val_members
    oof = member_probs[members, torch.arange(len(val))]
    return macro_auprc(oof, val.labels), macro_auprc(member_probs.mean(0), val.labels)


def macro_auprc(scores: torch.Tensor, labels) -> float:
    """Mean average precision over labels with a positive (scikit-learn's definition)."""
    from sklearn.metrics import average_precision_score
    y = labels.toarray()
    keep = y.sum(0) > 0
    return float(average_precision_score(y[:, keep], scores.numpy()[:, keep], average="macro"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(files, tmp_path, monkeypatch, capsys):
    _faulty_loss(monkeypatch, 6, lambda loss: loss * float("nan"))
    out = tmp_path / "nan"
    assert xtrain.main(tiny(files, out, "output.tensorboard=false")) == ExitStatus.FAILED
    printed = capsys.readouterr()
    assert "non-finite loss at step 6" in printed.out + printed.err
    last = load_checkpoint(out / "last.pt")
    assert last["step"] == 4                         # end of epoch 1: the last good state
    assert all(torch.isfinite(t).all() for t in last["model"].values())
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_resume_finishes(files, tmp_path, monkeypatch, capsys, signum):
    def interrupt(loss):
        os.kill(os.getpid(), signum)
        return loss

    _faulty_loss(monkeypatch, 3, interrupt)
    out = tmp_path / "sig"
    handler = signal.getsignal(signum)
    assert xtrain.main(tiny(files, out, "output.tensorboard=false")) == 128 + signum
    assert "stopped by signal" in capsys.readouterr().out
    assert load_checkpoint(out / "last.pt")["step"] == 3   # the step in flight finished, then saved
    assert signal.getsignal(signum) is handler               # handler restored
    monkeypatch.undo()
    assert xtrain.main(["--resume", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 8


@pytest.mark.parametrize("final", ["refit", "finetune"])
def test_signal_in_the_final_phase_keeps_the_first_phase_and_resume_runs_it_again(request, final, files, tmp_path,
                                                                                  monkeypatch, capsys):
    def interrupt(loss):
        os.kill(os.getpid(), signal.SIGTERM)
        return loss

    _faulty_loss(monkeypatch, 3 * 4 + 2, interrupt)   # 3 epochs of 4 steps, then the final phase's second step
    out = tmp_path / "sig"
    assert xtrain.main(tiny(files, out, *REFIT, f"train.final={final}")) == 128 + signal.SIGTERM
    assert f"{final} stopped by signal" in capsys.readouterr().out
    assert not (out / "metrics.json").exists() and load_checkpoint(out / "last.pt")["epoch"] == 3
    monkeypatch.undo()
    assert xtrain.main(["--resume", str(out)]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    done = request.getfixturevalue("refitted")[1] if final == "refit" else request.getfixturevalue("finetuned")
    reference = json.loads((done / "metrics.json").read_text())
    assert resumed["test_calibrated"] == reference["test_calibrated"]


def test_end_epoch_keeps_the_best_and_counts_bad_epochs():
    p = Progress(step=4, batch_in_epoch=4)
    assert end_epoch(p, {"m": 0.5, "x": 1.0}, "m")                  # anything beats -inf
    assert (p.epoch, p.batch_in_epoch, p.best_epoch, p.best_value, p.bad_epochs) == (1, 0, 1, 0.5, 0)
    assert not end_epoch(p, {"m": float("nan")}, "m")               # NaN never improves
    assert not end_epoch(p, {"m": 0.5}, "m")                        # a tie is no improvement
    assert (p.epoch, p.best_epoch, p.bad_epochs) == (3, 1, 2)
    assert end_epoch(p, {"m": 0.6}, "m") and (p.best_epoch, p.bad_epochs) == (4, 0)
    assert [h["epoch"] for h in p.history] == [1, 2, 3, 4] and p.history[0] == {"epoch": 1, "step": 4, "m": 0.5,
                                                                                "x": 1.0}
    assert not patience_ran_out(p, 0) and patience_ran_out(Progress(bad_epochs=2), 2)


def test_margin_counts_only_epochs_clearly_past_the_best():
    p = Progress()
    end_epoch(p, {"m": 0.50}, "m", 0.02)
    for value, bad in [(0.495, 0), (0.48, 1), (0.47, 2), (0.491, 0), (0.40, 1), (float("nan"), 2), (0.51, 0)]:
        end_epoch(p, {"m": value}, "m", 0.02)   # 0.495 and 0.491 are within 2% of 0.50: the count restarts
        assert p.bad_epochs == bad, value
    assert (p.best_value, p.best_epoch) == (0.51, 8)


def test_margin_keeps_the_latest_epoch_near_the_best():
    p = Progress()
    kept = [end_epoch(p, {"m": v}, "m", 0.02) for v in (0.40, 0.50, 0.495, 0.47, float("nan"), 0.491)]
    assert kept == [True, True, True, False, False, True]     # 0.495 and 0.491 are within 2% of 0.50
    assert (p.best_epoch, p.best_value, p.selected_epoch) == (2, 0.50, 6)
    assert end_epoch(p, {"m": 0.60}, "m", 0.02) and p.selected_epoch == 7   # a new best is always kept
    plain = Progress()   # no margin: the best epoch
    assert [end_epoch(plain, {"m": v}, "m") for v in (0.40, 0.50, 0.495)] == [True, True, False]
    assert plain.selected_epoch == plain.best_epoch == 2
    # a saved progress from before selected_epoch existed: the best epoch was the kept one
    assert Progress(best_epoch=5, best_value=0.3).selected_epoch == 5


def test_margin_ships_the_latest_epoch_on_a_plateau(files, tmp_path):
    """lr 1e-30: the weights do not move, every epoch ties the best; with a margin the last
    epoch is selected (the metrics, best.pt) and the best epoch stays the first."""
    out = tmp_path / "select"
    assert xtrain.main(tiny(files, out, "optim.lr=1e-30", "train.epochs=3", "train.margin=0.02",
                            "output.tensorboard=false")) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert (result["best_epoch"], result["selected_epoch"]) == (1, 3)
    assert load_checkpoint(out / "best.pt")["best"]["selected_epoch"] == 3
    # weights that do move (lr 1.0: the metric peaks at epoch 1): a margin of 100% selects every
    # epoch, so best.pt holds the last epoch's weights, not those of the best one
    out = tmp_path / "moving"
    assert xtrain.main(tiny(files, out, "train.epochs=3", "optim.lr=1.0", "train.margin=1.0",
                            "output.tensorboard=false")) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert (result["best_epoch"], result["selected_epoch"]) == (1, 3)
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    for name, value in last["model"].items():
        assert torch.equal(value, best["model"][name]), name


def test_early_stopping(files, tmp_path):
    out = tmp_path / "early"   # lr 1e-30: the weights never change, the metric never improves after epoch 1
    assert xtrain.main(tiny(files, out, "optim.lr=1e-30", "train.epochs=6", "train.patience=2",
                            "output.tensorboard=false")) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["epochs"] == 3 and result["best_epoch"] == 1
    out = tmp_path / "plateau"   # the same flat curve never stops with a margin: ties are within it
    assert xtrain.main(tiny(files, out, "optim.lr=1e-30", "train.epochs=4", "train.patience=2",
                            "train.margin=0.02", "output.tensorboard=false")) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 4


@pytest.mark.parametrize("args, message", [
    (["train.epochz=3"], "unknown config key 'train.epochz'; valid keys here: epochs, max_steps"),
    (["optim.lr=fast"], "'optim.lr' expects float"),
    (["train.final=both"], "config key 'train.final' must be one of 'none', 'refit', 'finetune', 'crossfit', 'auto'; got 'both'"),
    (["train.refit=true"], "config key 'train.refit' was removed: use train.final=refit"),
    (["train.final=crossfit"], "needs an ensemble (model.ensemble >= 2; got 1): each member leaves out"),
    (["train.early_stopping_metric=loss"], "'train.early_stopping_metric' must be one of auprc_micro"),
    (["data.synthetic=huge"], "'data.synthetic' must be one of 'default', 'seed'"),
])
def test_bad_config_is_a_clean_error(args, message, capsys, tmp_path):
    assert xtrain.main([*args, f"output.dir={tmp_path / 'x'}"]) == ExitStatus.USAGE
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_bad_key_in_yaml_file(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  hiden: [8]\n")
    assert xtrain.main(["--config", str(path)]) == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert "unknown config key 'model.hiden'" in err and "hidden" in err and str(path) in err


def test_missing_and_malformed_data_fail_before_training(files, tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    assert xtrain.main(tiny(files, tmp_path / "a", f"data.test={missing}")) == ExitStatus.USAGE
    assert f"data.test: file not found: {missing}" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("3 10 2\n0 1:0.5\n1 2:x\n0,1 3:1\n")
    assert xtrain.main(tiny(files, tmp_path / "b", f"data.train={bad}")) == ExitStatus.USAGE
    assert str(bad) in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_commands_and_library_do_not_import_train():
    """The arrows point down: evaluate, predict and the library never import xmlc.train."""
    code = ("import sys, xmlc.evaluate, xmlc.predict, xmlc.inference, xmlc.eval.calibrate, xmlc.stats; "
            "sys.exit('xmlc.train' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_print_config(capsys):
    assert xtrain.main(["--print-config", "optim.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out


@pytest.mark.parametrize("final", ["none", "crossfit"])
def test_ddp_two_processes_match_one(wide_files, tmp_path, final):
    files = wide_files   # sparse gradients of a wide table: DDP's sparse all-reduce (gloo)
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("gloo backend not available")
    extra = ("model.dropout=0.0", "output.tensorboard=false", "train.device=cpu", "train.amp=false",
             "model.ensemble=2",
             f"train.final={final}", "data.batch_size=76")   # 4 steps an epoch on 240 or 304 rows
    # float32: bf16 rounds each process's half-batch gradient before the all-reduce
    one, two = tmp_path / "one", tmp_path / "two"
    assert xtrain.main(tiny(files, one, *extra)) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "xmlc.train", *tiny(files, two, *extra)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert mb["num_val"] == 64 and mb["steps"] == ma["steps"] == 8
    if final == "crossfit":
        # each process averages a member's loss over its own kept rows, and DDP averages the two:
        # not the one-process mean over both halves' kept rows, so the weights differ a little.
        # Validation gathers both processes' out-of-fold scores: the metric of best.pt's weights.
        assert mb["val"]["auprc_macro"] == pytest.approx(out_of_fold_auprc(two, files)[0], abs=1e-6)
        assert mb["val"]["auprc_macro"] == pytest.approx(ma["val"]["auprc_macro"], abs=0.05)
        return
    a, b = params(one / "last.pt"), params(two / "last.pt")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4)
    for name in ("auprc_macro", "p@1"):   # scores gathered from both processes: the whole val set
        assert mb["val"][name] == pytest.approx(ma["val"][name], abs=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_run(files, tmp_path):
    out = tmp_path / "cuda"
    assert xtrain.main(tiny(files, out, "train.device=cuda", "train.amp=true")) == 0
    assert json.loads((out / "metrics.json").read_text())["test"]["auprc_micro"] > 0


@pytest.mark.parametrize("amp", [True, False])
def test_amp_on_cpu_trains_in_bf16_where_native(amp):
    """train.amp on CPU: the steps run under bf16 autocast where the CPU has native bf16
    (the logits come out bf16), in float32 elsewhere and with amp off; parameters stay float32."""
    import scipy.sparse as sp
    from xmlc.config import ModelConfig, OptimConfig, TrainConfig
    from xmlc.models import build_model
    from xmlc.optim import build_optimizer, build_scheduler

    native = native_bf16(torch.device("cpu"))
    X = sp.random(64, 30, density=0.2, format="csr", random_state=0, dtype="float32")
    Y = sp.random(64, 5, density=0.3, format="csr", random_state=1, dtype="float32")
    Y.data[:] = 1
    data = xdata.XMCData(X, Y, 30, 5)
    model = build_model(ModelConfig(hidden=[8], ensemble=2), 30, 5)
    optimizer = build_optimizer(OptimConfig(), model)
    dtypes = []
    model.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))

    class NoStop:
        requested, signum = False, None

    train_one_epoch(model, xdata.make_loader(data, 16, shuffle=False), losses.BCEWithLogits(), optimizer,
                           build_scheduler(OptimConfig(), optimizer, total_steps=4), progress=Progress(),
                           tcfg=TrainConfig(amp=amp), grad_clip=None, env=DistEnv(),
                           stop=NoStop())
    assert dtypes == [torch.bfloat16 if amp and native else torch.float32] * 4
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


def test_auto_epochs_take_about_a_fixed_number_of_steps():
    steps, (low, high) = PROFILES["wide_deep"].steps, PROFILES["wide_deep"].epochs
    assert auto_epochs(43_410, 128) == 3 and auto_epochs(4_050, 128) == high
    assert auto_epochs(10**6, 128) == low and auto_epochs(0, 128) == high
    assert auto_epochs(steps * 128 // 5, 128) == 5


def test_wide_deep_auto_run_records_the_resolved_epochs_and_loads_back(files, tmp_path):
    """configs/text.yaml's model (wide_deep, hidden auto) with train.epochs=auto through the CLI:
    the run trains the resolved number of epochs, writes it to config.yaml and best.pt, and
    best.pt rebuilds the same model (hidden auto resolves to the same width from D, L, M)."""
    out = tmp_path / "wd"
    overrides = [o for o in tiny(files, out, "model.name=wide_deep", "model.hidden=auto", "model.ensemble=2",
                                 "model.output_bias=prior", "output.tensorboard=false", "output.figures=false")
                 if not o.startswith(("train.epochs", "model.hidden=[16]"))] + ["train.epochs=auto", "train.patience=0"]
    assert xtrain.main(overrides) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["epochs"] == 10 and result["steps"] == 10 * 4   # 240 rows: at most 10 passes of 4 steps
    assert "epochs: 10" in (out / "config.yaml").read_text()
    artifact = RunArtifact.load(out, in_run_dir="best.pt")
    model = artifact.build_model()
    assert model.input.weight.shape == (artifact.num_features, auto_hidden(artifact.num_features, 12, 2))
