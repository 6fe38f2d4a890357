"""Tests for xmlc.data.tables (raw text / table / feature-matrix readers, label vocabulary) and
xmlc.data.features (tf-idf featuriser as plain data)."""

import csv
import dataclasses
import gzip
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xmlc.config import DataConfig, FeaturesConfig
from xmlc.data.features import _FIXED, TextFeaturizer
from xmlc.data.labels import LabelVocab
from xmlc.data.tables import (
    InputError,
    detect_format,
    read_feature_matrix,
    read_jsonl,
    read_label_lines,
    read_libmultilabel,
    read_split,
    read_table,
)

ROWS = [("printer on fire, again", ["hardware", "urgent"]),
        ('he said "reboot"\nand left', ["software"]),
        ("", ["hardware"]),
        ("nothing to see", [])]


def write(path, text: str):
    data = text.encode("utf-8")
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def table_text(delimiter=",", header=True, sep="|"):
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    if header:
        w.writerow(["id", "text", "tags"])
    for i, (text, labels) in enumerate(ROWS):
        w.writerow([i, text, sep.join(labels)])
    return buf.getvalue()


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".csv.gz", ".tsv.gz"])
@pytest.mark.parametrize("header", [True, False])
def test_table_roundtrip(tmp_path, ext, header):
    path = write(tmp_path / f"t{ext}", table_text("\t" if ".tsv" in ext else ",", header))
    cols = dict(text_column="text", labels_column="tags") if header else dict(text_column=1, labels_column=2)
    assert detect_format(path)[0] == "table"
    split = read_table(path, label_sep="|", **cols)
    assert split.texts == [t for t, _ in ROWS]
    assert split.labels == [l for _, l in ROWS]
    assert split.report["empty_text"] == 1 and split.report["no_labels"] == 1 and split.report["rows"] == 4


def test_table_joined_columns_and_header_override(tmp_path):
    path = write(tmp_path / "t.csv", "title,body,labels\nA,b c,x\nD,e,y\n")
    split = read_table(path, text_column=["title", "body"])
    assert split.texts == ["A b c", "D e"] and split.labels == [["x"], ["y"]]
    # header=false with indices: the header row is data
    split = read_table(path, text_column=0, labels_column=2, header=False)
    assert split.labels[0] == ["labels"] and len(split) == 3


def test_table_errors(tmp_path):
    path = write(tmp_path / "t.csv", "id,body,tags\n1,hello,a\n")
    with pytest.raises(InputError, match=r"t\.csv: line 1: no column named 'text'.*\['id', 'body', 'tags'\]"):
        read_table(path, labels_column="tags")
    with pytest.raises(InputError, match=r"t\.csv: line 1: no column named 'labels'; the header has columns"):
        read_table(path, text_column="body")
    with pytest.raises(InputError, match=r"line 1: no column named 'text'.*header"):
        read_table(path)   # neither column in the first row
    bad_quote = write(tmp_path / "q.csv", 'text,labels\n"ok",a\n"bro"ken,b\nfine,c\n')
    with pytest.raises(InputError, match=r"q\.csv: line 3: malformed CSV"):
        read_table(bad_quote)
    split = read_table(bad_quote, skip_bad_rows=True)
    assert split.report["skipped"] == 1 and split.report["skipped_lines"] == [3] and split.texts[0] == "ok"
    short = write(tmp_path / "s.csv", "a,x\nb\n")
    with pytest.raises(InputError, match=r"s\.csv: line 2: 1 field\(s\) but column 1 is needed"):
        read_table(short, text_column=0, labels_column=1)
    raw = tmp_path / "u.csv"
    raw.write_bytes(b"text,labels\nfine,a\nbad \xff\xfe byte,b\n")
    with pytest.raises(InputError, match=r"u\.csv: line 3: bytes that are not UTF-8"):
        read_table(raw)
    assert read_table(raw, skip_bad_rows=True).report["skipped_lines"] == [3]


@pytest.mark.parametrize("ext", [".jsonl", ".jsonl.gz"])
def test_jsonl(tmp_path, ext):
    lines = [json.dumps({"text": t, "labels": l if i % 2 else "|".join(l)}) for i, (t, l) in enumerate(ROWS)]
    path = write(tmp_path / f"d{ext}", "\n".join(lines) + "\n\n")
    assert detect_format(path)[0] == "jsonl"
    split = read_jsonl(path, label_sep="|")
    assert split.texts == [t for t, _ in ROWS] and split.labels == [l for _, l in ROWS]
    bad = write(tmp_path / "b.jsonl", '{"text": "a", "labels": ["x"]}\n{"text": "b", "labels": [\n')
    with pytest.raises(InputError, match=r"b\.jsonl: line 2: not valid JSON"):
        read_jsonl(bad)
    with pytest.raises(InputError, match=r"line 1: no key 'body'; this line has keys \['labels', 'text'\]"):
        read_jsonl(bad, text_column="body")


@pytest.mark.parametrize("ext", [".txt", ".txt.gz"])
@pytest.mark.parametrize("with_id", [True, False])
def test_libmultilabel(tmp_path, ext, with_id):
    lines = [("{}\t".format(i) if with_id else "") + " ".join(l) + "\t" + t.replace("\n", " ")
             for i, (t, l) in enumerate(ROWS)]
    path = write(tmp_path / f"lml{ext}", "\n".join(lines) + "\n")
    fmt, why = detect_format(path)
    assert fmt == "libmultilabel", why
    split = read_libmultilabel(path)
    assert split.labels == [l for _, l in ROWS] and split.texts[0] == ROWS[0][0]
    bad = write(tmp_path / "bad.txt", "a b\tok\nno tab here at all\n")
    with pytest.raises(InputError, match=r"bad\.txt: line 2: 1 tab-separated field"):
        read_libmultilabel(bad)


def test_detect_xmc_and_undecidable(tmp_path):
    assert detect_format(write(tmp_path / "a.txt", "3 10 4\n0,1 2:1 5:0.5\n"))[0] == "xmc"
    assert detect_format(write(tmp_path / "b.txt", "0,1 2:1 5:0.5\n"))[0] == "xmc"
    assert detect_format(write(tmp_path / "c.txt", "just words\n"))[0] == "xmc"   # its reader names the problem
    assert detect_format(tmp_path / "c.txt", "libmultilabel") == ("libmultilabel", "data.format")


@pytest.mark.parametrize("kind", ["npy", "npy.gz", "npz"])
def test_feature_matrix(tmp_path, kind):
    rng = np.random.default_rng(0)
    dense = rng.random((5, 4)).astype(np.float32) * (rng.random((5, 4)) < 0.5)
    path = tmp_path / f"x.{kind}"
    if kind == "npz":
        sp.save_npz(path, sp.csr_matrix(dense))
    else:
        buf = io.BytesIO()
        np.save(buf, dense)
        if kind.endswith(".gz"):
            with gzip.open(path, "wb") as f:
                f.write(buf.getvalue())
        else:
            path.write_bytes(buf.getvalue())
    X = read_feature_matrix(path)
    assert sp.issparse(X) == (kind == "npz")
    np.testing.assert_array_equal(X.toarray() if sp.issparse(X) else X, dense)
    labels = write(tmp_path / "y.txt", "a,b\n\nb\nc\na\n")
    assert read_label_lines(labels) == [["a", "b"], [], ["b"], ["c"], ["a"]]
    cfg = DataConfig(format="auto")
    split = read_split(path, cfg, key="data.train", labels_path=labels)
    assert split.texts is None and split.labels[0] == ["a", "b"]
    short = write(tmp_path / "y2.txt", "a\nb\n")
    with pytest.raises(InputError, match=r"has 5 rows but its labels file .*y2\.txt has 2 lines"):
        read_split(path, cfg, key="data.train", labels_path=short)


def test_vocab_order_unseen_and_ids():
    vocab = LabelVocab.build([["b", "a"], [], ["a", "c", "a"]])
    assert vocab.names == ["b", "a", "c"]
    Y, unseen = vocab.encode([["c", "zz"], ["zz", "a", "yy"]])
    assert Y.toarray().tolist() == [[0, 0, 1], [0, 1, 0]] and unseen == {"zz": 2, "yy": 1}
    fixed = LabelVocab.build([["x"]], names=["p", "q", "x"])
    assert fixed.encode([["x", "p"]])[0].toarray().tolist() == [[1, 0, 1]]


def texts_and_tags(n=120, seed=0):
    """A small table where words predict tags."""
    rng = np.random.default_rng(seed)
    words = {"red": ["apple", "cherry", "ruby"], "blue": ["sky", "ocean", "navy"], "green": ["grass", "leaf", "mint"]}
    rows = []
    for i in range(n):
        tags = [t for t in words if rng.random() < 0.4] or ["red"]
        text = " ".join(rng.choice(words[t]) for t in tags for _ in range(3)) + f" filler{i % 7}"
        rows.append((text, tags))
    return rows


def write_csv(path, rows, sep="|"):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "labels"])
        for text, tags in rows:
            w.writerow([text, sep.join(tags)])
    return path


@pytest.mark.parametrize("settings", [
    dict(),
    dict(ngram_range=[1, 1], min_df=1, sublinear_tf=False, lowercase=False),
    dict(analyzer="char_wb", ngram_range=[2, 4], min_df=1, max_features=50),
    dict(max_df=0.5, min_df=0.02, token_pattern=r"(?u)\b\w+\b"),
    dict(method="hashing", max_features=1024, ngram_range=[1, 2]),
])
def test_featurizer_equals_sklearn_and_survives_weights_only(settings):
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer, TfidfVectorizer

    rows = texts_and_tags(80)
    texts = [t for t, _ in rows] + ["Apple APPLE sky-ocean", "a b"]
    # The config's section, plus the settings only library callers set (a namespace of attributes).
    fcfg = SimpleNamespace(**(dataclasses.asdict(FeaturesConfig()) | _FIXED | settings))
    feat, X = TextFeaturizer.fit(texts, fcfg)
    common = dict(analyzer=fcfg.analyzer, ngram_range=tuple(fcfg.ngram_range), lowercase=fcfg.lowercase,
                  token_pattern=fcfg.token_pattern, dtype=np.float32)
    if fcfg.method == "hashing":
        ref_v = HashingVectorizer(n_features=fcfg.max_features, alternate_sign=False, norm=None, **common)
        ref_t = TfidfTransformer(norm=None, sublinear_tf=fcfg.sublinear_tf).fit(ref_v.transform(texts))
        reference = lambda docs: ref_t.transform(ref_v.transform(docs))
    else:
        ref = TfidfVectorizer(min_df=fcfg.min_df, max_df=fcfg.max_df, max_features=fcfg.max_features,
                              sublinear_tf=fcfg.sublinear_tf, norm=None, **common).fit(texts)
        reference = ref.transform
    new = ["cherry ocean mint unknownword", "", "RUBY ruby navy"]
    assert X.dtype == np.float32 and sp.isspmatrix_csr(X)
    np.testing.assert_allclose(X.toarray(), reference(texts).toarray(), rtol=1e-6)
    buf = io.BytesIO()
    torch.save({"featurizer": feat.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["featurizer"]
    again = TextFeaturizer.from_state(state)
    assert again.num_features == feat.num_features == X.shape[1]
    np.testing.assert_array_equal(again.transform(new).toarray(), feat.transform(new).toarray())
    np.testing.assert_allclose(again.transform(new).toarray(), reference(new).toarray(), rtol=1e-6)


def test_featurizer_settings_errors():
    with pytest.raises(ValueError, match="features.ngram_range"):
        TextFeaturizer.fit(["a b"], FeaturesConfig(ngram_range=[2, 1]))
    with pytest.raises(ValueError, match="features.max_df"):
        TextFeaturizer.fit(["a b"], SimpleNamespace(**dataclasses.asdict(FeaturesConfig()), max_df=1.5))
    with pytest.raises(ValueError, match="cannot build a vocabulary"):
        TextFeaturizer.fit(["a", "b"], FeaturesConfig(min_df=5))


def test_dense_features_reach_the_model_as_dense_rows():
    from xmlc.config import ModelConfig
    from xmlc.data import XMCData, make_loader
    from xmlc.models import build_model

    rng = np.random.default_rng(0)
    dense = (rng.random((9, 7)) * (rng.random((9, 7)) < 0.6)).astype(np.float32)
    Y = sp.csr_matrix((rng.random((9, 3)) < 0.5).astype(np.float32))
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp", hidden=[5], norm="none", dropout=0.0), 7, 3).eval()
    as_dense = next(iter(make_loader(XMCData(dense, Y, 7, 3), 9, shuffle=False)))
    as_sparse = next(iter(make_loader(XMCData(sp.csr_matrix(dense), Y, 7, 3), 9, shuffle=False)))
    assert as_dense.dense is not None and as_dense.indices.numel() == 0
    torch.testing.assert_close(model(as_dense), model(as_sparse), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(as_dense.targets, as_sparse.targets)


# ---------------------------------------------------------------------------------------
# End to end: a CSV of raw text -> train -> checkpoint (weights only) -> predict names / evaluate


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    from xmlc.train import loop as xtrain

    root = tmp_path_factory.mktemp("text_run")
    write_csv(root / "train.csv", texts_and_tags(240, 0), sep=";")
    write_csv(root / "test.csv", texts_and_tags(40, 1), sep=";")
    out = root / "run"
    assert xtrain.main([f"data.train={root / 'train.csv'}", f"data.test={root / 'test.csv'}", "data.label_sep=;",
                        "features.min_df=1", "model.name=linear", "optim.lr=0.05", "train.epochs=4",
                        "output.tensorboard=false", f"output.dir={out}"]) == 0
    return root, out


def test_text_run_checkpoint_is_plain_data_and_predicts_names(text_run, capsys):
    import xmlc
    from xmlc import evaluate as xevaluate, predict as xpredict

    root, out = text_run
    ckpt = torch.load(out / "best.pt", weights_only=True)   # no pickled objects anywhere
    assert ckpt["label_names"] == list(dict.fromkeys(t for _, tags in texts_and_tags(240, 0) for t in tags))
    assert sorted(ckpt["label_names"]) == ["blue", "green", "red"]   # first-appearance order of train.csv
    vocab = ckpt["featurizer"]["vocabulary"]   # one string, terms joined by NUL: fast to unpickle
    assert isinstance(vocab, str) and ckpt["featurizer"]["idf"].dtype == torch.float64
    assert len(vocab.split("\0")) == ckpt["featurizer"]["idf"].numel() and "apple" in vocab.split("\0")
    assert torch.load(out / "last.pt", weights_only=True)["featurizer"]["vocabulary"] == ckpt["featurizer"]["vocabulary"]

    clf = xmlc.load(out)
    rows = clf.predict(["cherry ruby apple apple", "sky navy ocean"], top_k=3)
    assert rows[0]["top_k"][0][0] == "red" and rows[1]["top_k"][0][0] == "blue"
    assert all(set(r["predicted"]) <= {"red", "green", "blue"} for r in rows)
    # the CLI: --text, a CSV without a labels column, stdin; JSONL and CSV out
    assert xpredict.main(["--checkpoint", str(out), "--text", "mint grass leaf", "--top-k", "1"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["row"] == 0 and line["top_k"][0][0] == "green"
    (root / "new.csv").write_text("text\ncherry apple\nocean sky\n")
    assert xpredict.main(["--checkpoint", str(out), "--data", str(root / "new.csv"), "--out", str(root / "p.csv")]) == 0
    table = list(csv.DictReader(open(root / "p.csv")))
    assert [r["row"] for r in table] == ["0", "1"] and table[0]["top_k"].startswith("red:")
    scores = clf.scores(["cherry apple", "ocean sky"])
    assert table[1]["predicted"] == "|".join(n for n, s, t in zip(clf.label_names, scores[1], clf.thresholds) if s >= t)
    # evaluate on the raw test table equals the run's own test metrics
    assert xevaluate.main(["--checkpoint", str(out), "--data", str(root / "test.csv"), "--out", str(root / "e.json")]) == 0
    evaluated = json.loads((root / "e.json").read_text())
    reference = json.loads((out / "metrics.json").read_text())
    for name in ("auprc_macro", "p@1", "f1_micro"):
        assert evaluated["calibrated"][name] == pytest.approx(reference["test_calibrated"][name], abs=1e-6)


def test_text_run_rejects_wrong_input(text_run, capsys):
    import xmlc
    from xmlc import predict as xpredict

    root, out = text_run
    clf = xmlc.load(out)
    with pytest.raises(InputError, match="trained on raw text: give a list of strings"):
        clf.predict(sp.csr_matrix((1, clf.num_features)))
    with pytest.raises(InputError, match=rf"D=3 columns but the model has D={clf.num_features:,}"):
        clf.predict(np.zeros((2, 3), np.float32))
    (root / "nocol.csv").write_text("body\nhello\n")
    assert xpredict.main(["--checkpoint", str(out), "--data", str(root / "nocol.csv")]) == 2
    assert "no column named 'text'" in capsys.readouterr().err
    assert xpredict.main(["--checkpoint", str(out), "--data", str(root / "nocol.csv"), "data.text_column=body"]) == 0
    assert json.loads(capsys.readouterr().out)["row"] == 0


def test_dense_features_train_and_predict(tmp_path):
    import xmlc
    from xmlc.train import loop as xtrain

    rng = np.random.default_rng(0)
    n, d = 200, 6
    X = rng.normal(size=(n, d)).astype(np.float32)
    labels = [["pos"] if x[0] > 0 else ["neg"] for x in X]
    np.save(tmp_path / "x.npy", X)
    (tmp_path / "y.txt").write_text("".join(",".join(l) + "\n" for l in labels))
    out = tmp_path / "run"
    assert xtrain.main([f"data.train={tmp_path / 'x.npy'}", f"data.train_labels={tmp_path / 'y.txt'}",
                        "data.normalize=none", "model.name=linear", "optim.lr=0.1", "train.epochs=3",
                        "output.tensorboard=false", f"output.dir={out}"]) == 0
    clf = xmlc.load(out)
    assert clf.featurizer is None and clf.label_names == list(dict.fromkeys(l[0] for l in labels))
    got = clf.predict(np.array([[3, 0, 0, 0, 0, 0], [-3, 0, 0, 0, 0, 0]], np.float32), top_k=1)
    assert [g["top_k"][0][0] for g in got] == ["pos", "neg"]
    from xmlc import evaluate as xevaluate
    assert xevaluate.main(["--checkpoint", str(out), "--data", str(tmp_path / "x.npy")]) == 2   # no --labels
    assert xevaluate.main(["--checkpoint", str(out), "--data", str(tmp_path / "x.npy"),
                           "--labels", str(tmp_path / "y.txt"), "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["num_examples"] == n


WORD_TEXTS = ["The café's naïve Ünïcode — CAFÉ cafe!", "don't stop; don't STOP 42 42 x2 _under_score",
              "", "a b c", "repeat repeat repeat repeat the the", "日本語 テキスト 日本語", "tab\tand\nnewline  spaces",
              "hyphen-ated words-with-hyphens", "ÀÉÎ õü ß straße STRASSE"]


@pytest.mark.parametrize("ngram_range", [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3)])
@pytest.mark.parametrize("sublinear_tf", [True, False])
@pytest.mark.parametrize("lowercase", [True, False])
def test_word_tfidf_equals_scikit_learn_entry_for_entry(ngram_range, sublinear_tf, lowercase):
    """WordTfidf (the saved featuriser at predict time, without scikit-learn) against scikit-learn's
    TfidfVectorizer on the same vocabulary and idf: same columns, bit-equal float32 values."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from xmlc.data.features import WordTfidf

    ref = TfidfVectorizer(ngram_range=ngram_range, sublinear_tf=sublinear_tf, lowercase=lowercase, norm=None,
                          token_pattern=_FIXED["token_pattern"], dtype=np.float32).fit(WORD_TEXTS[:5] + WORD_TEXTS[6:])
    vocab = sorted(ref.vocabulary_, key=ref.vocabulary_.get)
    ours = WordTfidf({"token_pattern": _FIXED["token_pattern"], "lowercase": lowercase,
                      "ngram_range": list(ngram_range), "sublinear_tf": sublinear_tf}, vocab, ref.idf_)
    new = WORD_TEXTS + ["unseen words only", "the Café CAFÉ café"]
    expected, got = ref.transform(new).tocsr(), ours.transform(new)
    expected.sort_indices(), got.sort_indices()
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.data, expected.data)
    with pytest.raises(ValueError, match="text 1 is a NoneType"):
        ours.transform(["fine", None])


def test_a_vocabulary_saved_as_a_list_still_loads():
    """Runs saved before the vocabulary became one string, and terms holding a NUL, keep a list."""
    from xmlc.data.features import vocabulary_terms

    feat, _ = TextFeaturizer.fit([t for t, _ in ROWS] * 2, FeaturesConfig(min_df=1))
    state = feat.state_dict()
    old = state | {"vocabulary": vocabulary_terms(state)}
    assert isinstance(old["vocabulary"], list) and len(old["vocabulary"]) == feat.num_features
    new = ["printer fire", "reboot again"]
    np.testing.assert_array_equal(TextFeaturizer.from_state(old).transform(new).toarray(),
                                  feat.transform(new).toarray())
    nul = TextFeaturizer.fit(["a\0b cc", "a\0b dd"], SimpleNamespace(**(dataclasses.asdict(FeaturesConfig(min_df=1))
                                                                     | _FIXED | {"token_pattern": r"\S+"})))[0]
    assert isinstance(nul.state_dict()["vocabulary"], list) and "a\0b" in nul.state_dict()["vocabulary"]


def test_a_saved_word_featuriser_loads_and_transforms_without_scikit_learn(tmp_path):
    """python -m xmlc.predict --text pays no scikit-learn import (about 1 s) for a word vocabulary."""
    import subprocess
    import sys

    feat, _ = TextFeaturizer.fit([t for t, _ in ROWS] * 2, FeaturesConfig(min_df=1))
    torch.save({"featurizer": feat.state_dict()}, tmp_path / "f.pt")
    code = ("import sys, torch; from xmlc.data.features import TextFeaturizer; "
            f"s = torch.load({str(tmp_path / 'f.pt')!r}, weights_only=True)['featurizer']; "
            "X = TextFeaturizer.from_state(s).transform(['printer on fire']); "
            "print(X.nnz, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(feat.transform(["printer on fire"]).nnz), "False"]
