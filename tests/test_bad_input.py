"""Issue 14: bad input never reaches a traceback and never a silent NaN.

Each case of the issue through the real command lines (``main()`` in-process): bad files,
bad config values and faults end with one ``error:`` line naming the culprit and the
documented exit status (2: bad input or config, before any data is read or any training;
1: a failure during the run), and nothing in the output is NaN.
"""

import json
import os
import re
import tempfile
from pathlib import Path

import pytest
import torch

from xmlc import data as xdata, evaluate as xevaluate, predict as xpredict

from xmlc.train import loop as xtrain
from xmlc.checkpoint import CheckpointError, CheckpointSaveError, load_checkpoint, save_checkpoint
from xmlc.cli import INPUT_ERRORS, ExitStatus, exit_status
from xmlc.inference import NonFiniteScores
from conftest import write_xmc_splits


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny XMC files (120 train / 40 val / 40 test rows, 30 features, 12 labels) and broken ones."""
    root = tmp_path_factory.mktemp("data")
    paths = write_xmc_splits(root, (120, 40, 40), num_features=30, seed=1)
    paths["empty"] = root / "empty.txt"
    paths["empty"].write_bytes(b"")
    paths["no_rows"] = root / "no_rows.txt"
    paths["no_rows"].write_text("0 30 12\n")
    paths["no_labels"] = root / "no_labels.txt"   # examples with features but not one label
    paths["no_labels"].write_text("".join(f" {i % 30}:1.0 {(i + 1) % 30}:0.5\n" for i in range(60)))
    paths["huge"] = root / "huge.txt"             # 1e40: finite in float64, inf in float32
    lines = paths["test"].read_text().splitlines()
    lines[3] += " 29:1e40"                        # file line 4 (line 1 is the header)
    paths["huge"].write_text("\n".join(lines) + "\n")
    return paths


def args(files, out, *extra):
    return [f"data.train={files['train']}", f"data.val={files['val']}", f"data.test={files['test']}",
            "model.hidden=[8]", "data.batch_size=40", "train.epochs=2", 
            "eval.min_positives=1", "output.tensorboard=false", "output.figures=false", f"output.dir={out}", *extra]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert xtrain.main(args(files, out)) == ExitStatus.OK
    return out


# --- config values: exit 2 naming the key, before any data is read ---------------------


@pytest.mark.parametrize("setting, message", [
    ("data.batch_size=-1", "config key 'data.batch_size' must be in [1, 16777216], got -1"),
    ("data.batch_size=0", "config key 'data.batch_size' must be in [1, 16777216], got 0"),
    ("model.hidden=[0]", "config key 'model.hidden[0]' must be >= 1, got 0"),
    ("loss.name=hinge", "config key 'loss.name' must be one of 'bce', 'focal', 'asymmetric'"),
    ("optim.lr=0", "config key 'optim.lr' must be > 0, got 0"),
    ("eval.ks=[0]", "config key 'eval.ks[0]' must be >= 1, got 0"),
    ("eval.ks=[0,1]", "config key 'eval.ks[0]' must be >= 1, got 0"),
])
def test_bad_config_values_fail_before_the_data_is_read(files, tmp_path, capsys, setting, message):
    missing = tmp_path / "not-there.txt"   # a data error would show if the data were read first
    out = tmp_path / "run"
    assert xtrain.main(args(files, out, f"data.train={missing}", setting)) == ExitStatus.USAGE
    assert message in error_line(capsys)
    assert not out.exists()


# --- input files: exit 2 naming the file, before training ----------------------------------


@pytest.mark.parametrize("key, kind, message", [
    ("train", "empty", "the file is empty"),
    ("val", "empty", "the file is empty"),
    ("test", "empty", "the file is empty"),
    ("val", "no_rows", "data.val ({}) has no examples"),
    ("test", "no_rows", "data.test ({}) has no examples"),
    ("train", "no_labels", "has 60 examples but not one positive label"),
    ("val", "no_labels", "data.val ({}) has 60 examples but not one positive label"),
    ("test", "huge", "line 4: value 1e+40 is not finite as float32 (largest 3.40282e+38) in token '29:1e40'"),
])
def test_bad_input_files_fail_before_training(files, tmp_path, capsys, key, kind, message):
    out = tmp_path / "run"
    assert xtrain.main(args(files, out, f"data.{key}={files[kind]}")) == ExitStatus.USAGE
    line = error_line(capsys)
    assert f"data.{key}" in line and str(files[kind]) in line and message.format(files[kind]) in line, line
    assert not out.exists()   # nothing trained, nothing written


def test_a_validation_split_without_positives_is_named(files, tmp_path, capsys):
    rare = tmp_path / "rare.txt"   # 40 rows, one label on one row: the carved validation split has none
    rare.write_text("0 1:1\n" + "".join(f" {i % 30}:1\n" for i in range(39)))
    out = tmp_path / "run"
    assert xtrain.main(args(files, out, f"data.train={rare}", "data.val=null", "data.test=null",
                            "data.val_fraction=0.2")) == ExitStatus.USAGE
    assert "the validation split carved from data.train" in error_line(capsys)


@pytest.mark.parametrize("synthetic", [False, True])
def test_held_out_fractions_that_leave_no_training_rows_are_named(files, tmp_path, capsys, synthetic):
    out = tmp_path / "run"
    if synthetic:   # 20,000 rows: round(0.9999 * 20,000) to test, then both of the 2 left to validation
        data = ["data.train=null", "data.val=null", "data.test=null"]
        named = ("the training split left of data.synthetic='default' (data.val_fraction=0.9999 to test, then "
                 "data.val_fraction=0.9999 of the rest to validation; lower data.val_fraction "
                 "or give data.test and data.val files) has no examples")
    else:   # 60 rows, all 60 to validation
        data = ["data.val=null"]
        named = (f"the training split left of data.train ({files['train']}) (data.val_fraction=0.9999 of the rest "
                 f"to validation; lower data.val_fraction or give data.val files) has no examples")
    assert xtrain.main(args(files, out, *data, "data.val_fraction=0.9999")) == ExitStatus.USAGE
    assert named in error_line(capsys)
    assert not out.exists()


# --- output directory: checked up front (exit 2), and failing mid-run (exit 1) -------------


def test_output_dir_that_is_a_file(files, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    assert xtrain.main(args(files, taken)) == ExitStatus.USAGE
    assert f"config key 'output.dir': {taken} is a file, not a directory" in error_line(capsys)
    assert xtrain.main(args(files, taken / "run")) == ExitStatus.USAGE
    assert f"{taken} is a file, not a directory (so {taken / 'run'} cannot be created)" in error_line(capsys)


def test_output_dir_that_is_not_writable(files, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access   # root ignores permission bits, so the refusal is simulated
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and access(p, mode))
    assert xtrain.main(args(files, locked / "run")) == ExitStatus.USAGE
    assert f"config key 'output.dir': directory {locked} is not writable" in error_line(capsys)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a Linux /proc")
def test_output_dir_where_nothing_can_be_created(files, capsys):
    # /proc passes the permission check (as root) but takes no new directories
    assert xtrain.main(args(files, Path("/proc/xmlc-run/inner"))) == ExitStatus.USAGE
    assert ("config key 'output.dir': /proc/xmlc-run/inner cannot be created: making a directory in /proc fails"
            in error_line(capsys))


def test_output_dir_on_a_read_only_file_system(files, tmp_path, capsys, monkeypatch):
    def read_only(*a, **kw):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    assert xtrain.main(args(files, tmp_path)) == ExitStatus.USAGE
    assert (f"config key 'output.dir': cannot write in {tmp_path}: making a directory in {tmp_path} fails "
            f"(Read-only file system)") in error_line(capsys)
    assert not list(tmp_path.iterdir())   # nothing written, no data read


def test_run_dir_unwritable_mid_run_keeps_the_previous_checkpoint(files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real, calls = tempfile.mkstemp, []

    def mkstemp(*a, dir=None, **kw):   # epoch 1 saves last.pt and best.pt; then the directory locks
        if Path(dir) == out:
            calls.append(1)
            if len(calls) > 2:
                raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assert xtrain.main(args(files, out)) == ExitStatus.FAILED
    line = error_line(capsys)
    assert f"could not save checkpoint {out / 'last.pt'} (Permission denied); the previous one is kept" in line
    assert load_checkpoint(out / "last.pt")["progress"]["epoch"] == 1


def test_partial_checkpoint_writes_are_removed_on_the_next_start(files, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".last.pt.k2j4x9.tmp"   # what kill -9 during a save leaves
    stale.write_bytes(b"\0" * 1000)
    assert xtrain.main(args(files, out, "train.epochs=1")) == ExitStatus.OK
    assert not stale.exists()
    assert not list(out.glob(".*.tmp"))


def test_resume_from_a_truncated_checkpoint(run_dir, tmp_path, capsys):
    out = tmp_path / "copy"
    out.mkdir()
    good = (run_dir / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(good[: len(good) // 2])
    assert xtrain.main(["--resume", str(out)]) == ExitStatus.USAGE
    assert f"checkpoint {out / 'last.pt'} could not be read" in error_line(capsys)
    # evaluate and predict say the same, with the same status
    (out / "best.pt").write_bytes(good[: len(good) // 2])
    for main, extra in ((xevaluate.main, []), (xpredict.main, ["--out", str(tmp_path / "p.jsonl")])):
        assert main(["--checkpoint", str(out), "--data", str(run_dir / "config.yaml"), *extra]) == ExitStatus.USAGE
        assert f"checkpoint {out / 'best.pt'} could not be read" in error_line(capsys)


def test_checkpoint_of_an_older_layout_is_a_clear_error(run_dir, files, tmp_path, capsys):
    """Weights stored as before the one-pass ensembles (each member apart, an nn.Linear head
    (L, H)): predict, evaluate and --resume name the file and the keys, exit 2, nothing loaded."""
    out = tmp_path / "old"
    out.mkdir()
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(run_dir / name)
        model = ckpt["model"]
        old = {f"members.{m}.{key}": value for m in range(2) for key, value in model.items()}
        old["members.0.head.weight"] = model["head.weight"][0].T.contiguous()   # (L, H)
        save_checkpoint(ckpt | {"model": old}, out / name)
    for main, extra in ((xevaluate.main, []), (xpredict.main, ["--out", str(tmp_path / "p.jsonl")])):
        assert main(["--checkpoint", str(out), "--data", str(files["test"]), *extra]) == ExitStatus.USAGE
        line = error_line(capsys)
        assert f"the weights in {out / 'best.pt'} do not fit the model its config builds" in line
        assert re.search(r"\(missing [^;]*head\.weight", line) and "; unexpected members.0." in line and "older xmlc" in line
    assert not (tmp_path / "p.jsonl").exists()
    assert xtrain.main(["--resume", str(out)]) == ExitStatus.USAGE
    assert "the weights in the --resume checkpoint do not fit" in error_line(capsys)


def test_load_weights_names_shapes_that_differ():
    from xmlc.checkpoint import load_weights
    model = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match=r"shapes weight \(3, 2\) \(expected \(2, 3\)\)"):
        load_weights(model, {"weight": torch.zeros(3, 2), "bias": torch.zeros(2)}, source="x.pt")
    load_weights(model, {"weight": torch.ones(2, 3), "bias": torch.zeros(2)})
    assert float(model.weight.detach().sum()) == 6.0


# --- evaluate / predict ---------------------------------------------------------------


@pytest.mark.parametrize("kind, message", [("empty", "the file is empty"), ("no_rows", "has no examples"),
                                           ("no_labels", "not one positive label"),
                                           ("huge", "value 1e+40 is not finite as float32")])
def test_evaluate_rejects_files_it_cannot_score(run_dir, files, tmp_path, capsys, kind, message):
    out = tmp_path / "eval.json"
    assert xevaluate.main(["--checkpoint", str(run_dir), "--data", str(files[kind]),
                           "--out", str(out)]) == ExitStatus.USAGE
    line = error_line(capsys)
    assert "--data" in line and str(files[kind]) in line and message in line, line
    assert not out.exists()


def test_predict_rejects_a_value_that_overflows_float32(run_dir, files, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    assert xpredict.main(["--checkpoint", str(run_dir), "--data", str(files["huge"]),
                          "--out", str(out)]) == ExitStatus.USAGE
    assert "line 4: value 1e+40 is not finite as float32" in error_line(capsys)
    assert not out.exists()


def test_predict_and_evaluate_never_write_nan(run_dir, files, tmp_path, capsys):
    ckpt = load_checkpoint(run_dir / "best.pt")
    table = next(v for v in ckpt["model"].values() if v.shape[0] == 30)   # the (D, H) input table
    table[5] = float("nan")   # feature 5 poisons every row that has it
    broken = tmp_path / "nan" / "best.pt"
    save_checkpoint(ckpt, broken)
    test = xdata.read_xmc(files["test"])
    poisoned = [i for i in range(len(test)) if 5 in test.features[i].indices]
    assert poisoned and len(poisoned) < len(test)
    out = tmp_path / "p.jsonl"
    assert xpredict.main(["--checkpoint", str(broken), "--data", str(files["test"]),
                          "--out", str(out)]) == ExitStatus.FAILED
    line = error_line(capsys)
    assert f"NaN or infinite for row(s) {', '.join(map(str, poisoned[:10]))}" in line, line
    assert not out.exists()   # no partial output that could pass for a whole one
    assert xevaluate.main(["--checkpoint", str(broken), "--data", str(files["test"]),
                           "--out", str(tmp_path / "e.json")]) == ExitStatus.FAILED
    assert "NaN or infinite for row(s)" in error_line(capsys)

    good = tmp_path / "good.jsonl"   # and the healthy model's output is strict JSON
    assert xpredict.main(["--checkpoint", str(run_dir), "--data", str(files["test"]), "--out", str(good)]) == 0
    records = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in predict output"))
               for line in good.read_text().splitlines()]
    assert len(records) == 40


@pytest.mark.parametrize("exc, status", [
    (CheckpointError("checkpoint x/last.pt could not be read"), ExitStatus.USAGE),
    (CheckpointSaveError("could not save checkpoint x/last.pt (No space left on device); the previous one is kept"),
     ExitStatus.FAILED),
    (NonFiniteScores("row(s) 3"), ExitStatus.FAILED),
    (PermissionError(13, "Permission denied"), ExitStatus.FAILED),
    (FileNotFoundError("data.train: file not found: t.txt"), ExitStatus.USAGE),
])
def test_train_evaluate_and_predict_give_the_same_status(exc, status):
    assert exit_status(exc) == exit_status(exc, INPUT_ERRORS) == status


def test_a_file_that_is_not_a_checkpoint(files, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    assert xpredict.main(["--checkpoint", str(files["train"]), "--data", str(files["test"]),
                          "--out", str(out)]) == ExitStatus.USAGE
    line = error_line(capsys)   # not torch's paragraph suggesting weights_only=False
    assert line.endswith("could not be read: not a file written by torch.save (truncated, or another kind of file)")


@pytest.mark.parametrize("option, message", [
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got 0"),
    (["--threshold", "nan"], "argument --threshold: expected a probability in [0, 1], got 'nan'"),
    (["--threshold", "1.5"], "argument --threshold: expected a probability in [0, 1], got '1.5'"),
    (["--device", "gpu"], "argument --device: expected a device such as cpu or cuda, got 'gpu'"),
    (["--device", "cuda:99"], "argument --device: 'cuda:99': no such CUDA device here"),
])
def test_predict_options_out_of_range(run_dir, files, tmp_path, capsys, option, message):
    with pytest.raises(SystemExit) as stop:
        xpredict.main(["--checkpoint", str(run_dir), "--data", str(files["test"]),
                       "--out", str(tmp_path / "p.jsonl"), *option])
    assert stop.value.code == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
