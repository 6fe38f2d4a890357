"""Issue 23: nothing silently wrong. Each input that an older xmlc read into something other
than what the file says (a phantom label, a label made of an id, a skip that hid half the
file, columns renamed on resume, a corrupted checkpoint accepted, two runs in one directory,
NaN probabilities) is now an error naming the file, line or key, or is read correctly."""

import re

import pytest

from xmlc.data.tables import describe, read_jsonl, read_libmultilabel, read_table
from xmlc.errors import InputError


def write(path, text):
    path.write_text(text)
    return path


# --- 1. a CSV row with more fields than the header --------------------------------------


def test_a_csv_row_with_an_unquoted_comma_is_not_read_as_a_phantom_label(tmp_path):
    path = write(tmp_path / "t.csv", "text,labels\nscreen flickers,hardware\n"
                                     "printer is broken, please help,hardware\nok,x\n")
    with pytest.raises(InputError, match=r"t\.csv: line 3: 3 fields but the header has 2: a field holding "
                                         r"the delimiter ',' must be quoted"):
        read_table(path)
    split = read_table(path, skip_bad_rows=True)
    assert split.texts == ["screen flickers", "ok"] and split.labels == [["hardware"], ["x"]]
    assert split.report["skipped_lines"] == [3]
    quoted = write(tmp_path / "q.csv", 'text,labels\n"printer is broken, please help",hardware\n')
    assert read_table(quoted).labels == [["hardware"]]


def test_a_headerless_csv_row_wider_than_the_first_is_an_error(tmp_path):
    path = write(tmp_path / "t.csv", "a,x\nb,c,y\n")
    with pytest.raises(InputError, match=r"line 2: 3 fields but the first row has 2"):
        read_table(path, text_column=0, labels_column=1, header=False)


# --- 2. a LibMultiLabel line missing its text --------------------------------------------


def test_a_libmultilabel_line_without_its_text_is_an_error_not_an_id_label(tmp_path):
    path = write(tmp_path / "l.txt", "1\tbilling\tinvoice is wrong\n10\turgent\n11\tx y\tok\n")
    with pytest.raises(InputError, match=r"l\.txt: line 2: 2 tab-separated fields but line 1 has 3 "
                                         r"\(id<TAB>labels<TAB>text\)"):
        read_libmultilabel(path)
    split = read_libmultilabel(path, skip_bad_rows=True)
    assert split.labels == [["billing"], ["x", "y"]] and split.report["skipped_lines"] == [2]
    no_ids = write(tmp_path / "n.txt", "billing\tinvoice\nurgent\tnow\n")
    assert read_libmultilabel(no_ids).labels == [["billing"], ["urgent"]]


# --- 3. a skipped row never hides the rows after it ---------------------------------------


def test_an_unclosed_quote_skips_its_line_only(tmp_path):
    rows = [f"ticket {i},l{i % 3}" for i in range(300)]
    rows[8] = '"ticket 8 is broken,l2'          # file line 10 opens a quote it never closes
    path = write(tmp_path / "t.csv", "text,labels\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputError, match=r"t\.csv: line 10: malformed CSV"):
        read_table(path)
    split = read_table(path, skip_bad_rows=True)
    assert len(split) == 299 and split.report["skipped_lines"] == [10]
    assert split.texts[8] == "ticket 9" and split.line_of(8) == 11
    assert describe(split, "data.train") == ("data.train: 299 rows read from 301 lines, 1 bad rows skipped "
                                             "(lines 10)")


def test_a_quote_closed_rows_later_does_not_swallow_them(tmp_path):
    path = write(tmp_path / "t.csv", 'text,labels\n"a,x\nb,y\nc",z,w\nd,v\n')
    split = read_table(path, skip_bad_rows=True)
    assert split.texts == ["b", "d"] and split.report["skipped_lines"] == [2, 4]


def test_an_undecodable_line_keeps_the_line_numbers_after_it(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"text": "a", "labels": "x"}\n\xff\n{"text": "b", "labels": 3}\n')
    split = read_jsonl(path, skip_bad_rows=True)
    assert split.texts == ["a", "b"] and split.line_of(1) == 3 and split.report["skipped_lines"] == [2]


# --- 4. a resumed run keeps its label vocabulary and featuriser ---------------------------


def tickets(n=120, order=1):
    """A small ticket table; the first-appearance order of its labels follows ``order``."""
    names = ["alpha", "beta", "gamma", "delta", "eps"]
    rows = [(f"about {names[i % 5]} and {names[(i * 3) % 5]} case {i % 7}", f"{names[i % 5]}|{names[(i * 3) % 5]}")
            for i in range(n)]
    return "text,labels\n" + "".join(f"{t},{l}\n" for t, l in rows[::order])


def text_run(train, out, *extra):
    return [f"data.train={train}", "data.label_sep='|'", "model.hidden=[8]", "data.batch_size=20",
            "train.epochs=2", "eval.min_positives=1", "output.tensorboard=false", "output.figures=false",
            "features.min_df=1", f"output.dir={out}", *extra]


def test_resume_with_reordered_rows_keeps_the_label_columns(tmp_path, capsys):
    from xmlc.checkpoint import load_checkpoint
    from xmlc.train import loop as xtrain

    train, out = tmp_path / "t.csv", tmp_path / "run"
    train.write_text(tickets())
    assert xtrain.main(text_run(train, out, "train.max_steps=3")) == 0
    before = load_checkpoint(out / "last.pt")
    train.write_text(tickets(order=-1))   # the same rows, last first: labels appear in another order
    assert xtrain.main(["--resume", str(out), "train.max_steps=null"]) == 0
    after = load_checkpoint(out / "best.pt")
    assert after["label_names"] == before["label_names"] == ["alpha", "beta", "delta", "gamma", "eps"]
    assert after["featurizer"]["vocabulary"] == before["featurizer"]["vocabulary"]
    train.write_text(tickets() + "new words,zeta\n")
    capsys.readouterr()
    assert xtrain.main(["--resume", str(out), "train.epochs=3"]) == 2
    assert "label 'zeta' (1 rows; 1 such labels) is not one of the 5 labels of the run being resumed" in \
        capsys.readouterr().err


# --- 5. a checkpoint whose bytes changed on disk is refused ------------------------------


def corrupt_a_tensor(path, into):
    """``path`` copied to ``into`` with one byte of its largest tensor record flipped (the zip
    directory and the record's stored CRC-32 left as they were)."""
    import zipfile
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.file_size // 2] ^= 0x40
    into.parent.mkdir(parents=True, exist_ok=True)
    into.write_bytes(bytes(raw))
    return into


@pytest.fixture(scope="module")
def xmc_run(tmp_path_factory):
    from conftest import write_xmc_splits
    from xmlc.train import loop as xtrain

    root = tmp_path_factory.mktemp("xmc")
    files = write_xmc_splits(root, (120, 40, 40), num_features=30, seed=1)
    out = root / "run"
    assert xtrain.main([f"data.train={files['train']}", f"data.val={files['val']}", f"data.test={files['test']}",
                        "model.hidden=[8]", "data.batch_size=40", "train.epochs=2", "eval.min_positives=1",
                        "output.tensorboard=false", "output.figures=false", f"output.dir={out}"]) == 0
    return files, out


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_corrupted_checkpoint_is_refused_by_every_load(xmc_run, tmp_path, capsys):
    import xmlc
    from xmlc import evaluate as xevaluate, predict as xpredict
    from xmlc.errors import CheckpointError
    from xmlc.train import loop as xtrain

    files, run = xmc_run
    bad = corrupt_a_tensor(run / "best.pt", tmp_path / "bad" / "best.pt")
    corrupt_a_tensor(run / "last.pt", tmp_path / "bad" / "last.pt")
    out = tmp_path / "p.jsonl"
    for main, extra in ((xpredict.main, ["--out", str(out)]), (xevaluate.main, ["--out", str(tmp_path / "e.json")])):
        capsys.readouterr()
        assert main(["--checkpoint", str(bad), "--data", str(files["test"]), *extra]) == 2
        assert f"checkpoint {bad} is corrupted: the bytes of its record" in error_line(capsys)
    assert not out.exists() and not (tmp_path / "e.json").exists()
    with pytest.raises(CheckpointError, match="do not match their checksum"):
        xmlc.load(bad.parent)
    assert xtrain.main(["--resume", str(bad.parent)]) == 2
    assert "last.pt is corrupted" in error_line(capsys)


class Odd:
    """Not plain data: a checkpoint holding one needs unpickling."""


def test_a_pickled_object_is_refused_without_advising_weights_only_false(tmp_path):
    import torch
    from xmlc.checkpoint import load_checkpoint
    from xmlc.errors import CheckpointError

    path = tmp_path / "obj.pt"
    torch.save({"format": 1, "odd": Odd()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "holds a pickled test_silent.Odd object, not plain data (refused" in str(err.value)
    assert "weights_only" not in str(err.value)


# --- 6. one run at a time in a run directory; a finished run is replaced only on request ---


def xmc_args(files, out, *extra):
    return [f"data.train={files['train']}", f"data.val={files['val']}", "model.hidden=[8]", "data.batch_size=40",
            "train.epochs=1", "eval.min_positives=1", "output.tensorboard=false", "output.figures=false",
            f"output.dir={out}", *extra]


def test_a_second_run_in_a_directory_in_use_fails_at_once(xmc_run, tmp_path, capsys):
    import os
    from xmlc.train import loop as xtrain
    from xmlc.train.monitor import RunDirLock

    files, _ = xmc_run
    out = tmp_path / "run"
    first = RunDirLock(out)   # what the first run holds while it trains
    try:
        assert (out / ".lock").read_text() == f"{os.getpid()}\n"
        assert xtrain.main(xmc_args(files, out, "data.train=/not/read.txt")) == 2
        assert f"config key 'output.dir': {out} is in use by another run (pid {os.getpid()}" in error_line(capsys)
    finally:
        first.release()
    assert not out.exists()   # the lock made it; released empty, it is gone
    assert xtrain.main(xmc_args(files, out)) == 0
    assert not (out / ".lock").exists()


def test_a_new_run_over_a_finished_one_needs_overwrite(xmc_run, tmp_path, capsys):
    from xmlc.train import loop as xtrain

    files, _ = xmc_run
    out = tmp_path / "run"
    assert xtrain.main(xmc_args(files, out)) == 0
    (out / "eval-test.txt.json").write_text("{}")   # an evaluation of the old model
    before = (out / "best.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert xtrain.main(xmc_args(files, out, "train.seed=3")) == 2
    line = error_line(capsys)
    assert f"config key 'output.dir': {out} holds a run (best.pt, eval-test.txt.json, last.pt, metrics.json)" in line
    assert "set output.overwrite=true to replace it, continue it with --resume" in line
    assert (out / "best.pt").stat().st_mtime_ns == before
    assert xtrain.main(xmc_args(files, out, "train.seed=3", "output.overwrite=true")) == 0
    assert not (out / "eval-test.txt.json").exists() and (out / "best.pt").stat().st_mtime_ns != before


# --- 7. the Python API checks feature values as the readers do ---------------------------


@pytest.mark.parametrize("value, message", [
    (float("nan"), "features: row 1, column 3: non-finite value nan"),
    (float("inf"), "features: row 1, column 3: non-finite value inf"),
    (1e40, "features: row 1, column 3: value 1e+40 is not finite as float32 (largest 3.40282e+38)"),
    (None, "features: row 1, column 3: None is not a number"),
])
def test_the_api_refuses_rows_that_are_not_finite_float32(xmc_run, value, message):
    import warnings
    import numpy as np
    import scipy.sparse as sp
    import xmlc

    _, run = xmc_run
    clf = xmlc.load(run)
    X = np.zeros((2, 30), dtype=object if value is None else np.float64)
    X[1, 3] = value
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no RuntimeWarning from the float32 cast on the way
        with pytest.raises(InputError, match=re.escape(message)):
            clf.predict(X)
        if value is not None:
            with pytest.raises(InputError, match=re.escape(message)):
                clf.predict(sp.csr_matrix(X))


def test_the_api_on_empty_and_misshapen_input(xmc_run):
    import numpy as np
    import xmlc

    _, run = xmc_run
    clf = xmlc.load(run)
    assert clf.predict([]) == [] and clf.predict(np.zeros((0, 30))) == []
    assert tuple(clf.scores(np.zeros((0, 30))).shape) == (0, 12)
    for shape in [(30,), (1, 30, 1)]:
        with pytest.raises(InputError, match=re.escape(f"features must be a 2-d (N, D) matrix, got shape {shape}")):
            clf.predict(np.zeros(shape))
    assert len(clf.predict(np.ones((3, 30)))) == 3


# --- 8. evaluate's JSON that cannot be written: one line, nothing left behind -------------


def test_evaluate_next_to_a_read_only_checkpoint(xmc_run, tmp_path, capsys, monkeypatch):
    import builtins
    import io
    import os
    from pathlib import Path
    from xmlc import evaluate as xevaluate

    files, run = xmc_run

    def refusing(real):   # root ignores permission bits: the file system refuses new files in run
        def open_(file, *a, **kw):
            if isinstance(file, (str, os.PathLike)) and Path(file).parent == run and "eval" in Path(file).name:
                raise OSError(30, "Read-only file system")
            return real(file, *a, **kw)
        return open_

    monkeypatch.setattr(builtins, "open", refusing(builtins.open))
    monkeypatch.setattr(io, "open", refusing(io.open))
    monkeypatch.setattr(os, "open", refusing(os.open))
    assert xevaluate.main(["--checkpoint", str(run), "--data", str(files["test"])]) == 1
    assert error_line(capsys) == (f"error: could not write {run / 'eval-test.txt.json'} (Read-only file system); "
                                  f"give --out PATH to write it elsewhere")
    assert not list(run.glob("*eval-test*"))


def test_evaluate_out_on_a_full_disk_or_under_a_file_leaves_nothing(xmc_run, tmp_path, capsys, monkeypatch):
    import os
    from xmlc import evaluate as xevaluate

    files, run = xmc_run
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert xevaluate.main(["--checkpoint", str(run), "--data", str(files["test"]),
                           "--out", str(blocker / "e.json")]) == 1
    assert error_line(capsys).startswith(f"error: --out: could not write {blocker / 'e.json'} (")
    real = os.fdopen

    def full(fd, *a, **kw):
        f = real(fd, *a, **kw)
        f.write = lambda text: (_ for _ in ()).throw(OSError(28, "No space left on device"))
        return f

    monkeypatch.setattr(os, "fdopen", full)
    out = tmp_path / "e.json"
    assert xevaluate.main(["--checkpoint", str(run), "--data", str(files["test"]), "--out", str(out)]) == 1
    assert error_line(capsys) == f"error: --out: could not write {out} (No space left on device)"
    assert not list(tmp_path.glob("*e.json*"))


# --- weak cases: each a one-line error with its status, or the right behaviour -------------


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """A raw-text run whose label names hold '|' and ':' (label_sep ';')."""
    from xmlc.train import loop as xtrain

    root = tmp_path_factory.mktemp("text")
    names = ["net|work", "hard:ware", "account", "billing", "other"]
    train = root / "t.csv"
    train.write_text("text,labels\n" + "".join(f"about {names[i % 5].replace('|', ' ').replace(':', ' ')} "
                                               f"case {i % 7},{names[i % 5]};{names[(i * 3) % 5]}\n"
                                               for i in range(120)))
    out = root / "run"
    assert xtrain.main(text_run(train, out, "data.label_sep=;", "eval.calibration=f1")) == 0   # per-label F1: labels are predicted
    return root, out


def test_checkpoint_save_on_a_full_disk_is_a_save_error(tmp_path, monkeypatch):
    import torch
    from xmlc.checkpoint import save_checkpoint
    from xmlc.errors import CheckpointSaveError

    save_checkpoint({"format": 1, "step": 1}, tmp_path / "last.pt")

    def full(*a, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0\n"
                           "PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointSaveError, match=r"could not save checkpoint .*last\.pt \(PytorchStreamWriter "
                                                  r"failed writing file data/0: file write failed\); the previous "
                                                  r"one is kept"):
        save_checkpoint({"format": 1, "step": 2}, tmp_path / "last.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_predict_on_a_header_only_table_names_the_file(text_model, tmp_path, capsys):
    from xmlc import predict as xpredict

    _, run = text_model
    empty = write(tmp_path / "e.csv", "text,labels\n")
    assert xpredict.main(["--checkpoint", str(run), "--data", str(empty)]) == 2
    assert error_line(capsys) == f"error: --data: {empty} has no rows (0 rows read from 1 lines; a header only)"


def test_rows_without_known_features_are_flagged_and_counted(text_model, tmp_path, capsys):
    import json
    import xmlc
    from xmlc import predict as xpredict

    _, run = text_model
    out = tmp_path / "p.jsonl"
    assert xpredict.main(["--checkpoint", str(run), "--text", "", "--text", "zzz qqq", "--text", "about account",
                          "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("no_features", False) for r in records] == [True, True, False]
    assert records[0]["top_k"] == records[1]["top_k"]   # the model's prior, the same for both
    assert "note: 2 of 3 rows have no feature the model knows" in capsys.readouterr().err
    assert [r.get("no_features", False) for r in xmlc.load(run).predict(["", "about account"])] == [True, False]


def test_predict_csv_quotes_label_names_holding_its_separators(text_model, tmp_path):
    import csv
    import json
    from xmlc import predict as xpredict

    _, run = text_model
    out = tmp_path / "p.csv"
    assert xpredict.main(["--checkpoint", str(run), "--text", "about net work", "--top-k", "5",
                          "--out", str(out)]) == 0
    row = next(csv.DictReader(out.open()))
    cells = row["top_k"]
    assert '"net|work":' in cells and '"hard:ware":' in cells and "account:" in cells
    names = [json.loads(n) if n.startswith('"') else n for n in re.findall(r'"(?:[^"\\]|\\.)*"|[^|]+', row["predicted"])]
    assert names and set(names) <= {"net|work", "hard:ware", "account", "billing", "other"}
    assert row["no_features"] == ""


@pytest.mark.parametrize("change, message", [
    (lambda c: c | {"label_names": c["label_names"][:-1]}, "label_names holds 4 names for num_labels=5"),
    (lambda c: c | {"thresholds": __import__("torch").zeros(3)}, "thresholds holds shape (3,) for num_labels=5"),
    (lambda c: c | {"label_stats": {"num_examples": 3}}, "label_stats.counts holds 'missing' for num_labels=5"),
    (lambda c: {k: v for k, v in c.items() if k != "config"}, "field 'config' is missing"),
])
def test_crafted_checkpoints_are_named_errors(text_model, tmp_path, capsys, change, message):
    from xmlc import evaluate as xevaluate, predict as xpredict
    from xmlc.checkpoint import load_checkpoint, save_checkpoint

    root, run = text_model
    bad = tmp_path / "best.pt"
    save_checkpoint(change(load_checkpoint(run / "best.pt")), bad)
    assert xpredict.main(["--checkpoint", str(bad), "--text", "about account"]) == 2
    assert message in error_line(capsys)
    assert xevaluate.main(["--checkpoint", str(bad), "--data", str(root / "t.csv"), "--out",
                           str(tmp_path / "e.json")]) == 2
    assert message in error_line(capsys)


def test_a_one_megabyte_csv_cell_is_read(tmp_path):
    path = write(tmp_path / "t.csv", "text,labels\n" + "word " * 200_000 + ",a\nshort,b\n")
    split = read_table(path)
    assert len(split.texts[0]) == 1_000_000 and split.labels == [["a"], ["b"]]


def test_a_truncated_gzip_names_the_file(tmp_path):
    import gzip
    raw = gzip.compress(("text,labels\n" + "".join(f"row {i} words,a\n" for i in range(2000))).encode())
    path = tmp_path / "t.csv.gz"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=rf"{re.escape(str(path))}: line \d+: the gzip data is damaged or truncated"):
        read_table(path)


def test_a_text_table_read_as_features_is_named(tmp_path):
    from xmlc.data.tables import read_feature_matrix
    path = write(tmp_path / "t.npy", "text,labels\na,b\n")
    with pytest.raises(InputError, match=r"t\.npy: not a \.npy \(numpy\.save\) file: it starts with b'text,l'; "
                                         r"data.format=npz reads feature matrices only") as err:
        read_feature_matrix(path)
    assert "allow_pickle" not in str(err.value)


def test_a_float64_past_float32_in_npy_is_named_without_a_warning(tmp_path):
    import warnings
    import numpy as np
    from xmlc.data.tables import read_feature_matrix
    path = tmp_path / "x.npy"
    X = np.ones((3, 4))
    X[2, 1] = 1e40
    np.save(path, X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=r"x\.npy: row 2, column 1: value 1e\+40 is not finite as float32"):
            read_feature_matrix(path)


def test_an_empty_text_column_list_is_a_config_error(tmp_path):
    from xmlc.config import DataConfig
    from xmlc.data.tables import read_split
    path = write(tmp_path / "t.csv", "text,labels\na,b\n")
    with pytest.raises(InputError, match=r"config key 'data.text_column' is an empty list"):
        read_split(path, DataConfig(text_column=[]), key="data.train")


def test_predict_stdin_that_is_not_utf8_names_the_line(text_model, monkeypatch, capsys):
    import io
    import sys
    from xmlc import predict as xpredict

    _, run = text_model
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"about account\nbad \xff byte\n"),
                                                       encoding="utf-8", errors="surrogateescape"))
    assert xpredict.main(["--checkpoint", str(run)]) == 2
    assert "error: standard input: line 2: bytes that are not UTF-8 at byte 4" in error_line(capsys)


def test_stats_on_a_table_says_it_reads_xmc_only(tmp_path, capsys):
    from xmlc.stats.__main__ import main as stats_main
    path = write(tmp_path / "t.csv", "text,labels\na,b\n")
    assert stats_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "reads XMC / libsvm multilabel files only, and this one reads as table (extension .csv)" in err
    assert "malformed" not in err


def test_resume_with_a_model_override_names_the_override(xmc_run, tmp_path, capsys):
    import shutil
    from xmlc.train import loop as xtrain

    _, run = xmc_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert xtrain.main(["--resume", str(copy), "model.hidden=[16]", "train.epochs=3"]) == 2
    line = error_line(capsys)
    assert "--resume: the override model.hidden=[16] (was [8]) builds a model whose weights have other shapes" in line
    assert "older xmlc" not in line


def test_ctrl_c_while_reading_the_data_exits_130_without_a_traceback(xmc_run, tmp_path, capsys, monkeypatch):
    from xmlc.train import loop as xtrain

    files, _ = xmc_run

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(xtrain, "load_splits", interrupted)
    out = tmp_path / "run"
    assert xtrain.main(xmc_args(files, out)) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "stopped by signal 2 (SIGINT) before training started" in err
    assert not out.exists()
