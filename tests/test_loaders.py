"""Real-data loaders (BlogFeedback, FEMNIST, CIFAR-10), the .npz cache, downloads and the generators.

Fixture files are written into tmp_path in the exact original formats (UCI CSV
and zip, LEAF JSON, CIFAR-10 python pickles and tar.gz); the real files are read
from ../shared/data through the ``shared_data`` fixture (``data`` marker).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import json
import math
import pickle
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from proxfed import FederatedDataset
from proxfed.data import (
    REMOTE_FILES,
    ChecksumError,
    DataFormatError,
    client_size_table,
    default_cache_dir,
    download_file,
    load_blogfeedback,
    load_cifar10,
    load_dataset,
    load_femnist,
    make_fedprox_synthetic,
    partition_report,
    plot_client_sizes,
    read_cifar10,
    save_dataset,
)

# --------------------------------------------------------------------------- BlogFeedback fixtures

TEST_NAMES = ["blogData_test-2012.02.01.00_00.csv", "blogData_test-2012.02.02.00_00.csv",
              "blogData_test-2012.03.26.01_00.csv"]


def blog_rows(gen, sizes, key_seed=0):
    """Rows of 281 columns: 50 key columns constant per blog, 230 features, integer target last."""
    keys = np.random.default_rng(key_seed).integers(0, 50, (len(sizes), 50)).astype(float)
    keys[:, 0] = np.arange(len(sizes))  # all keys distinct
    rows = []
    for k, m in enumerate(sizes):
        feats = np.round(gen.uniform(-5, 100, (m, 230)), 3)
        feats[:, 7] = 3.0  # a constant column (like UCI's columns 13, 33, 38, 278)
        target = gen.integers(0, 20, (m, 1)).astype(float)
        rows.append(np.hstack([np.tile(keys[k], (m, 1)), feats, target]))
    return np.vstack(rows)


def csv_bytes(rows) -> bytes:
    return "".join(",".join(repr(float(v)) for v in r) + "\n" for r in rows).encode()


@pytest.fixture(scope="module")
def blog_raw():
    gen = np.random.default_rng(1)
    train = blog_rows(gen, [3, 1, 40, 7, 2, 25, 12, 1, 9, 30])
    train = train[gen.permutation(train.shape[0])]  # blogs interleaved, as in the UCI file
    tests = [blog_rows(gen, s) for s in ([4, 2], [3], [1, 1, 2])]
    return train, tests


def write_blog(folder: Path, train, tests, gz=False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    raw = csv_bytes(train)
    if gz:
        (folder / "blogData_train.csv.gz").write_bytes(gzip.compress(raw))
    else:
        (folder / "blogData_train.csv").write_bytes(raw)
    for name, rows in zip(TEST_NAMES, tests):
        (folder / name).write_bytes(csv_bytes(rows))
    return folder


def write_blog_zip(path: Path, train, tests, members=None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        if members is None or "train" in members:
            z.writestr("blogData_train.csv", csv_bytes(train))
        if members is None or "test" in members:
            for name, rows in zip(TEST_NAMES, tests):
                z.writestr(name, csv_bytes(rows))
    return path


@pytest.fixture
def blog_dir(tmp_path, blog_raw):
    return write_blog(tmp_path / "blogfeedback", *blog_raw)


# --------------------------------------------------------------------------- BlogFeedback

def test_blogfeedback_preprocessing(blog_dir, blog_raw):
    train, tests = blog_raw
    ds = load_blogfeedback(blog_dir, seed=3)
    n = train.shape[0]
    n_val = math.ceil(0.1 * n)
    keys = np.unique(train[:, :50], axis=0)
    assert ds.n_clients == keys.shape[0] == 10
    assert ds.n_samples == n - n_val and ds.validation.n_samples == n_val
    assert ds.test.n_samples == sum(t.shape[0] for t in tests)
    assert ds.n_features == 281 and np.all(ds.X[:, -1] == 1.0)
    # clients are the keys, in key order, rows in file order
    rows = ds.meta["train_row"]
    np.testing.assert_array_equal(ds.meta["keys"], keys)
    for i, (lo, hi) in enumerate(zip(ds.offsets[:-1], ds.offsets[1:])):
        assert np.all(train[rows[lo:hi], :50] == keys[i]) and np.all(np.diff(rows[lo:hi]) > 0)
    # disjoint train / validation covering the file
    assert sorted(np.concatenate([rows, ds.meta["validation_row"]]).tolist()) == list(range(n))
    # min-max scaling fit on the training part only; the target is not scaled
    raw = train[rows, :-1]
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    np.testing.assert_allclose(ds.X[:, :-1], (raw - lo) / span)
    assert ds.X[:, :-1].min() == 0.0 and ds.X[:, :-1].max() == 1.0
    assert np.all(ds.X[:, 57] == 0.0) and 57 in ds.meta["constant_columns"]  # constant column -> 0
    np.testing.assert_array_equal(ds.y, train[rows, -1])
    val = train[ds.meta["validation_row"]]
    np.testing.assert_allclose(ds.validation.X[:, :-1], (val[:, :-1] - lo) / span)
    np.testing.assert_array_equal(ds.validation.y, val[:, -1])
    test = np.vstack(tests)
    np.testing.assert_allclose(ds.test.X[:, :-1], (test[:, :-1] - lo) / span)
    np.testing.assert_array_equal(ds.test.y, test[:, -1])
    assert ds.meta["test_files"] == TEST_NAMES


def test_blogfeedback_split_is_seeded_and_keeps_every_client(blog_dir):
    a, b = load_blogfeedback(blog_dir, seed=5), load_blogfeedback(blog_dir, seed=5)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.meta["validation_row"], b.meta["validation_row"])
    splits = set()
    for seed in range(25):  # two one-row blogs: plain random splits would often drop them
        ds = load_blogfeedback(blog_dir, seed=seed, validation_fraction=0.4)
        assert ds.n_clients == 10 and ds.validation.n_samples == math.ceil(0.4 * 130)
        splits.add(tuple(ds.meta["validation_row"]))
    assert len(splits) == 25


def test_blogfeedback_options(blog_dir):
    ds = load_blogfeedback(blog_dir, validation_fraction=0, scale=False, bias=False)
    assert ds.validation is None and ds.n_features == 280 and ds.n_samples == 130
    assert ds.X.max() > 1


def test_blogfeedback_gz_and_zip_match_folder(tmp_path, blog_raw, blog_dir):
    ref = load_blogfeedback(blog_dir)
    for ds in (load_blogfeedback(write_blog(tmp_path / "gz", *blog_raw, gz=True)),
               load_blogfeedback(write_blog_zip(tmp_path / "BlogFeedback.zip", *blog_raw))):
        np.testing.assert_array_equal(ds.X, ref.X)
        np.testing.assert_array_equal(ds.y, ref.y)
        np.testing.assert_array_equal(ds.offsets, ref.offsets)
        np.testing.assert_array_equal(ds.test.X, ref.test.X)
        np.testing.assert_array_equal(ds.validation.y, ref.validation.y)


def test_blogfeedback_cache_roundtrip(tmp_path, blog_dir, monkeypatch):
    cache = tmp_path / "cache"
    ds = load_blogfeedback(blog_dir, cache_dir=cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    import proxfed.data.blogfeedback as bf

    def no_parse(*args, **kwargs):
        raise AssertionError("the CSV was parsed again")

    monkeypatch.setattr(bf, "_build", no_parse)
    again = load_blogfeedback(blog_dir, cache_dir=cache)
    np.testing.assert_array_equal(again.X, ds.X)
    np.testing.assert_array_equal(again.validation.X, ds.validation.X)
    np.testing.assert_array_equal(again.meta["keys"], ds.meta["keys"])
    assert again.meta["test_files"] == ds.meta["test_files"] and again.name == ds.name
    with pytest.raises(AssertionError, match="parsed again"):  # other options: another cache entry
        load_blogfeedback(blog_dir, cache_dir=cache, seed=1)
    monkeypatch.undo()
    time.sleep(0.01)
    (blog_dir / TEST_NAMES[0]).write_bytes((blog_dir / TEST_NAMES[0]).read_bytes())  # touched source
    load_blogfeedback(blog_dir, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2


def _replace_line(raw: bytes, line: int, new: bytes) -> bytes:
    lines = raw.split(b"\n")
    lines[line - 1] = new
    return b"\n".join(lines)


@pytest.mark.parametrize(
    "damage, match",
    [
        ("short_row", r"blogData_train\.csv: line 4 has 280 columns, expected 281"),
        ("text_cell", r"blogData_train\.csv: line 6, column 12: not a number: 'abc'"),
        ("empty_cell", r"blogData_train\.csv: line 6, column 12: not a number: ''"),
        ("nan_cell", r"blogData_train\.csv: line 9, column 3: non-finite value"),
        ("all_short", r"blogData_train\.csv: line 1 has 280 columns, expected 281"),
        ("test_file", r"blogData_test-2012\.02\.02\.00_00\.csv: line 1, column 281: not a number: '[0-9.]+x'"),
        ("truncated_gz", r"blogData_train\.csv\.gz: truncated or corrupt gzip"),
        ("empty", r"blogData_train\.csv: the file has no data rows"),
    ],
)
def test_blogfeedback_bad_files(tmp_path, blog_raw, damage, match):
    train, tests = blog_raw
    folder = write_blog(tmp_path / "blog", train, tests, gz=damage == "truncated_gz")
    f = folder / "blogData_train.csv"
    raw = csv_bytes(train)
    if damage == "short_row":
        f.write_bytes(_replace_line(raw, 4, b",".join(raw.split(b"\n")[3].split(b",")[:-1])))
    elif damage in ("text_cell", "empty_cell"):
        cells = raw.split(b"\n")[5].split(b",")
        cells[11] = b"abc" if damage == "text_cell" else b""
        f.write_bytes(_replace_line(raw, 6, b",".join(cells)))
    elif damage == "nan_cell":
        cells = raw.split(b"\n")[8].split(b",")
        cells[2] = b"nan"
        f.write_bytes(_replace_line(raw, 9, b",".join(cells)))
    elif damage == "all_short":
        f.write_bytes(csv_bytes(train[:, 1:]))
    elif damage == "test_file":
        t = folder / TEST_NAMES[1]
        t.write_bytes(t.read_bytes().replace(b"\n", b"x\n", 2))
    elif damage == "truncated_gz":
        gzf = folder / "blogData_train.csv.gz"
        gzf.write_bytes(gzf.read_bytes()[:-40])
    elif damage == "empty":
        f.write_bytes(b"")
    cache = tmp_path / "cache"
    with pytest.raises(DataFormatError, match=match):
        load_blogfeedback(folder, cache_dir=cache)
    assert not cache.exists() or not any(cache.iterdir())  # nothing partial written


def test_blogfeedback_missing_files(tmp_path, blog_raw):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_blogfeedback(tmp_path / "nowhere")
    folder = write_blog(tmp_path / "blog", *blog_raw)
    (folder / "blogData_train.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"blogData_train\.csv"):
        load_blogfeedback(folder)
    folder = write_blog(tmp_path / "blog2", *blog_raw)
    for name in TEST_NAMES:
        (folder / name).unlink()
    with pytest.raises(FileNotFoundError, match=r"no BlogFeedback test files.*blog2"):
        load_blogfeedback(folder)
    with pytest.raises(ValueError, match="path"):
        load_blogfeedback()
    with pytest.raises(ValueError, match="validation_fraction"):
        load_blogfeedback(folder, validation_fraction=1.0)


def test_blogfeedback_zip_without_members(tmp_path, blog_raw):
    z = write_blog_zip(tmp_path / "only_tests.zip", *blog_raw, members=("test",))
    with pytest.raises(DataFormatError, match=r"only_tests\.zip: zip lacks .*blogData_train\.csv"):
        load_blogfeedback(z)
    z = write_blog_zip(tmp_path / "only_train.zip", *blog_raw, members=("train",))
    with pytest.raises(DataFormatError, match=r"only_train\.zip: zip lacks .*blogData_test"):
        load_blogfeedback(z)
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataFormatError, match=r"broken\.zip: not a readable zip"):
        load_blogfeedback(bad)


def test_client_size_report(tmp_path, blog_dir):
    ds = load_blogfeedback(blog_dir)
    table = client_size_table(ds)
    assert table.splitlines()[-1].startswith(f"N=10 n={ds.n_samples}")
    assert sum(int(line.split()[2]) for line in table.splitlines()[1:-1]) == 10
    pytest.importorskip("matplotlib")
    fig = plot_client_sizes(ds, tmp_path / "sizes.png")
    assert (tmp_path / "sizes.png").stat().st_size > 1000 and fig.axes


# --------------------------------------------------------------------------- FEMNIST fixtures

def leaf_doc(gen, users, sizes, bad=None):
    data = {}
    for u, m in zip(users, sizes):
        x = np.where(gen.random((m, 784)) < 0.85, 1.0, np.round(gen.random((m, 784)), 4))
        data[u] = {"x": x.tolist(), "y": gen.integers(0, 62, m).tolist()}
    return {"users": list(users), "num_samples": list(sizes), "user_data": data}


def write_leaf(folder: Path, n_files=3, per_file=3, gz=(False, True, False), seed=0) -> Path:
    gen = np.random.default_rng(seed)
    writer = 0
    for i in range(n_files):
        users = [f"f{(7 * (writer + j)) % 97:04d}_{j:02d}" for j in range(per_file)]  # unsorted ids
        writer += per_file
        train = leaf_doc(gen, users, gen.integers(3, 9, per_file).tolist())
        test = leaf_doc(gen, users, gen.integers(1, 3, per_file).tolist())
        for split, doc in (("train", train), ("test", test)):
            d = folder / split
            d.mkdir(parents=True, exist_ok=True)
            name = f"all_data_{i}_niid_05_keep_0_{split}_9.json"
            text = json.dumps(doc).encode()
            if gz[i % len(gz)]:
                (d / (name + ".gz")).write_bytes(gzip.compress(text))
            else:
                (d / name).write_bytes(text)
    return folder


@pytest.fixture
def leaf_dir(tmp_path):
    return write_leaf(tmp_path / "femnist")


def _leaf_all(folder, split):
    out = {}
    for f in sorted((folder / split).iterdir()):
        raw = f.read_bytes()
        doc = json.loads(gzip.decompress(raw) if f.suffix == ".gz" else raw)
        out.update(doc["user_data"])
    return out


# --------------------------------------------------------------------------- FEMNIST

def test_femnist_all_writers(leaf_dir):
    ds = load_femnist(leaf_dir, n_writers=None)
    train, test = _leaf_all(leaf_dir, "train"), _leaf_all(leaf_dir, "test")
    writers = sorted(train)
    assert ds.meta["writers"] == writers and ds.n_clients == 9
    assert ds.y.dtype == np.int64 and ds.test.y.dtype == np.int64 and ds.n_features == 784
    toff = ds.meta["test_offsets"]
    for i, w in enumerate(writers):
        X, y = ds.client(i)
        np.testing.assert_array_equal(X, np.array(train[w]["x"]))
        assert y.tolist() == train[w]["y"]
        np.testing.assert_array_equal(ds.test.X[toff[i]:toff[i + 1]], np.array(test[w]["x"]))
        assert ds.test.y[toff[i]:toff[i + 1]].tolist() == test[w]["y"]
    assert ds.meta["n_classes"] == 62 and ds.meta["image_shape"] == [28, 28]
    assert "white" in ds.meta["pixel_convention"]


def test_femnist_writer_choice_and_invert(leaf_dir):
    full = load_femnist(leaf_dir, n_writers=None)
    first = load_femnist(leaf_dir, n_writers=4)
    assert first.meta["writers"] == full.meta["writers"][:4]
    np.testing.assert_array_equal(first.X, full.X[: full.offsets[4]])
    a = load_femnist(leaf_dir, n_writers=4, sample=True, seed=7)
    b = load_femnist(leaf_dir, n_writers=4, sample=True, seed=7)
    assert a.meta["writers"] == b.meta["writers"] == sorted(a.meta["writers"])
    assert len({tuple(load_femnist(leaf_dir, n_writers=4, sample=True, seed=s).meta["writers"])
                for s in range(6)}) > 1
    inv = load_femnist(leaf_dir, n_writers=4, invert=True)
    np.testing.assert_allclose(inv.X, 1.0 - first.X)
    np.testing.assert_allclose(inv.test.X, 1.0 - first.test.X)
    assert inv.meta["inverted"] and "ink" in inv.meta["pixel_convention"]


def test_femnist_works_with_softmax_regression(leaf_dir):
    from proxfed.problems import SoftmaxRegression

    ds = load_femnist(leaf_dir, n_writers=3)
    problem = SoftmaxRegression(ds, n_classes=ds.meta["n_classes"])
    assert problem.n_classes == 62


def test_femnist_cache(tmp_path, leaf_dir):
    a = load_femnist(leaf_dir, n_writers=5, cache_dir=tmp_path / "c")
    b = load_femnist(leaf_dir, n_writers=5, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(a.X, b.X)
    assert b.meta["writers"] == a.meta["writers"]
    np.testing.assert_array_equal(b.meta["test_offsets"], a.meta["test_offsets"])


def _edit_first_train_file(folder, edit):
    path = folder / "train" / "all_data_0_niid_05_keep_0_train_9.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path.name


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d.pop("num_samples"), r"all_data_0_niid_05_keep_0_train_9\.json: missing key 'num_samples'"),
        (lambda d: d["user_data"][d["users"][1]].pop("y"), r"train_9\.json: user '\w+': missing key 'y'"),
        (lambda d: d["num_samples"].__setitem__(0, d["num_samples"][0] + 1),
         r"train_9\.json: user '\w+': num_samples is \d+ but len\(x\) = \d+"),
        (lambda d: d["user_data"][d["users"][2]]["x"][1].pop(), r"train_9\.json: user '\w+', sample 1: image has "
                                                               r"length 783, expected 784"),
        (lambda d: d["user_data"][d["users"][0]]["y"].__setitem__(2, 62),
         r"train_9\.json: user '\w+', sample 2: label 62 is not an integer in \[0, 62\)"),
        (lambda d: d["user_data"][d["users"][0]]["y"].__setitem__(0, -1), r"sample 0: label -1"),
        (lambda d: d["user_data"][d["users"][0]]["x"][0].__setitem__(5, 2.5), r"sample 0: pixel 5 = 2.5"),
        (lambda d: d["users"].__setitem__(1, d["users"][0]), r"listed twice"),
    ],
)
def test_femnist_bad_json(tmp_path, leaf_dir, edit, match):
    _edit_first_train_file(leaf_dir, edit)
    with pytest.raises(DataFormatError, match=match):
        load_femnist(leaf_dir, n_writers=None, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_femnist_bad_files(tmp_path, leaf_dir):
    gz = leaf_dir / "train" / "all_data_1_niid_05_keep_0_train_9.json.gz"
    good = gz.read_bytes()
    gz.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFormatError, match=r"train_9\.json\.gz: truncated or corrupt gzip"):
        load_femnist(leaf_dir)
    gz.write_bytes(gzip.compress(b'{"users": ['))
    with pytest.raises(DataFormatError, match=r"train_9\.json\.gz: not valid JSON"):
        load_femnist(leaf_dir)
    gz.write_bytes(good)
    dup = leaf_dir / "train" / "copy.json"
    dup.write_bytes(gzip.decompress(good))
    with pytest.raises(DataFormatError, match=r"also appears in"):
        load_femnist(leaf_dir)
    dup.unlink()
    with pytest.raises(ValueError, match=r"n_writers=10 but .*train holds only 9 writers"):
        load_femnist(leaf_dir, n_writers=10)
    with pytest.raises(ValueError, match="n_writers"):
        load_femnist(leaf_dir, n_writers=0)
    with pytest.raises(FileNotFoundError, match="FEMNIST folder not found"):
        load_femnist(tmp_path / "missing")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="FEMNIST test folder not found"):
        load_femnist(tmp_path / "empty")
    (tmp_path / "empty" / "test").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no LEAF \.json"):
        load_femnist(tmp_path / "empty")


def test_femnist_plain_json_preferred_over_gz(leaf_dir):
    ref = load_femnist(leaf_dir, n_writers=None)
    gz = leaf_dir / "train" / "all_data_1_niid_05_keep_0_train_9.json.gz"
    (leaf_dir / "train" / gz.name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))  # gunzip -k
    ds = load_femnist(leaf_dir, n_writers=None)
    np.testing.assert_array_equal(ds.X, ref.X)


# --------------------------------------------------------------------------- CIFAR-10 fixtures

LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def cifar_batch(gen, n, label):
    return {b"batch_label": label, b"labels": gen.integers(0, 10, n).tolist(),
            b"data": gen.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"img_%d.png" % i for i in range(n)]}


def write_cifar(folder: Path, n=12, seed=0, override=None) -> Path:
    """The python-pickle batches (protocol 2 dicts with bytes keys, as the original)."""
    gen = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        batch = cifar_batch(gen, n, b"training batch %d of 5" % (i + 1) if i < 5 else b"testing batch 1 of 1")
        if override and name in override:
            batch = override[name](batch)
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"num_cases_per_batch": n, b"label_names": LABEL_NAMES, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def write_cifar_tar(path: Path, folder: Path, skip=()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for f in sorted(folder.iterdir()):
            if f.name not in skip:
                tar.add(f, arcname=f"cifar-10-batches-py/{f.name}")
    return path


# --------------------------------------------------------------------------- CIFAR-10

def test_read_cifar10_layouts(tmp_path):
    folder = write_cifar(tmp_path / "cifar-10-batches-py")
    raw = pickle.loads((folder / "data_batch_2").read_bytes())
    X, y, Xt, yt, names = read_cifar10(folder)
    assert X.shape == (60, 3, 32, 32) and X.dtype == np.uint8 and Xt.shape == (12, 3, 32, 32)
    assert y.dtype == np.int64 and y[12:24].tolist() == raw[b"labels"]
    assert names[0] == "airplane" and len(names) == 10
    img = raw[b"data"][0]
    c, h, w = 2, 5, 17
    assert X[12, c, h, w] == img[c * 1024 + h * 32 + w]
    Xh, *_ = read_cifar10(folder, layout="NHWC")
    assert Xh.shape == (60, 32, 32, 3) and Xh[12, h, w, c] == img[c * 1024 + h * 32 + w]
    # the parent folder and the tar.gz archive give the same arrays
    for source in (tmp_path, write_cifar_tar(tmp_path / "cifar-10-python.tar.gz", folder)):
        X2, y2, Xt2, yt2, _ = read_cifar10(source)
        np.testing.assert_array_equal(X2, X)
        np.testing.assert_array_equal(yt2, yt)


def test_load_cifar10_federated(tmp_path):
    folder = write_cifar(tmp_path / "c", n=200)
    ds = load_cifar10(folder, n_clients=10, alpha=0.3, sigma=0.3, seed=0)
    X, y, Xt, yt, names = read_cifar10(folder)
    assert ds.n_clients == 10 and ds.n_samples == 1000 and ds.n_features == 3072
    assert ds.y.dtype == np.int64 and 0 <= ds.X.min() and ds.X.max() <= 1
    idx = ds.meta["row_index"]
    assert sorted(idx.tolist()) == list(range(1000))
    np.testing.assert_array_equal(ds.X, X.reshape(1000, -1)[idx] / 255.0)
    np.testing.assert_array_equal(ds.test.y, yt)
    assert ds.meta["partition"] == {"name": "unbalanced_dirichlet", "n_clients": 10, "alpha": 0.3, "sigma": 0.3,
                                    "seed": 0}
    nhwc = load_cifar10(folder, partition="iid", n_clients=4, layout="NHWC")
    assert nhwc.meta["image_shape"] == [32, 32, 3] and nhwc.client_sizes.tolist() == [250] * 4
    shards = load_cifar10(folder, partition="shards", n_clients=5, shards_per_client=2)
    assert shards.n_clients == 5
    custom = load_cifar10(folder, partition=[np.arange(0, 500), np.arange(500, 1000)])
    assert custom.client_sizes.tolist() == [500, 500]
    with pytest.raises(ValueError, match="unknown partition"):
        load_cifar10(folder, partition="nope")
    with pytest.raises(ValueError, match="layout"):
        read_cifar10(folder, layout="CHW")


@pytest.mark.parametrize(
    "override, match",
    [
        ({"data_batch_3": lambda b: {**b, b"data": b[b"data"][:, :3000]}},
         r"data_batch_3: data must be a uint8 array of shape \(n, 3072\), got shape \(12, 3000\)"),
        ({"test_batch": lambda b: {**b, b"data": b[b"data"].reshape(12, 3, 32, 32)}},
         r"test_batch: data must be a uint8 array .* got shape \(12, 3, 32, 32\)"),
        ({"data_batch_1": lambda b: {**b, b"data": b[b"data"].astype(np.float32)}}, r"data_batch_1: .*dtype float32"),
        ({"data_batch_5": lambda b: {**b, b"labels": b[b"labels"][:-1]}}, r"data_batch_5: labels must be 12 integers"),
        ({"data_batch_2": lambda b: {**b, b"labels": [10] + b[b"labels"][1:]}},
         r"data_batch_2: label 10 at index 0 is outside \[0, 10\)"),
        ({"data_batch_4": lambda b: {b"labels": b[b"labels"]}}, r"data_batch_4: missing key 'data'"),
    ],
)
def test_cifar10_bad_batches(tmp_path, override, match):
    folder = write_cifar(tmp_path / "c", override=override)
    with pytest.raises(DataFormatError, match=match):
        read_cifar10(folder)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar10_bad_files(tmp_path, capsys):
    folder = write_cifar(tmp_path / "c")
    (folder / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 batch not found: .*data_batch_4"):
        read_cifar10(folder)
    folder = write_cifar(tmp_path / "d")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(DataFormatError, match=r"test_batch: not a CIFAR-10 python pickle .*print is not allowed"):
        read_cifar10(folder)
    assert "pwned" not in capsys.readouterr().out
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00(U\x04data")  # truncated pickle
    with pytest.raises(DataFormatError, match=r"test_batch: not a CIFAR-10 python pickle"):
        read_cifar10(folder)
    folder = write_cifar(tmp_path / "e")
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": LABEL_NAMES[:9]}, protocol=2))
    with pytest.raises(DataFormatError, match=r"batches\.meta: label_names must be a list of 10"):
        read_cifar10(folder)
    tar = write_cifar_tar(tmp_path / "partial.tar.gz", write_cifar(tmp_path / "f"), skip=("test_batch",))
    with pytest.raises(DataFormatError, match=r"partial\.tar\.gz: archive lacks the CIFAR-10 members \['test_batch'\]"):
        read_cifar10(tar)
    trunc = tmp_path / "trunc.tar.gz"
    trunc.write_bytes(write_cifar_tar(tmp_path / "t.tar.gz", write_cifar(tmp_path / "g")).read_bytes()[:5000])
    with pytest.raises(DataFormatError, match=r"trunc\.tar\.gz: not a readable CIFAR-10 tar archive"):
        read_cifar10(trunc)
    with pytest.raises(FileNotFoundError, match="CIFAR-10 folder or archive not found"):
        read_cifar10(tmp_path / "nothing")


# --------------------------------------------------------------------------- .npz cache

def test_save_load_dataset_roundtrip(tmp_path):
    ds = make_fedprox_synthetic(0.5, 0.5, n_clients=5, seed=2)
    ds = FederatedDataset(ds.X, ds.y, ds.offsets, test=ds.test, validation=ds.test, name=ds.name,
                          meta={**ds.meta, "names": ["a", "b"], "nested": {"k": (1, 2)}, "none": None})
    path = save_dataset(ds, tmp_path / "ds")
    assert path.name == "ds.npz" and [p.name for p in tmp_path.iterdir()] == ["ds.npz"]
    back = load_dataset(path)
    for attr in ("X", "y", "offsets"):
        np.testing.assert_array_equal(getattr(back, attr), getattr(ds, attr))
    assert back.y.dtype == np.int64 and back.name == ds.name
    np.testing.assert_array_equal(back.validation.X, ds.validation.X)
    np.testing.assert_array_equal(back.meta["W"], ds.meta["W"])
    assert back.meta["names"] == ["a", "b"] and back.meta["nested"] == {"k": [1, 2]} and back.meta["none"] is None
    with pytest.raises(TypeError, match="cannot be saved"):
        save_dataset(FederatedDataset(ds.X, ds.y, ds.offsets, meta={"f": print}), tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataFormatError, match=r"bad\.npz"):
        load_dataset(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", a=np.ones(2))
    with pytest.raises(DataFormatError, match="not a proxfed dataset"):
        load_dataset(tmp_path / "other.npz")


# --------------------------------------------------------------------------- downloads (local server)

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    timeout = 10  # a stuck client cannot hold a handler thread for long

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def local_server(root: Path, lifetime: float = 120.0):
    """HTTP server on 127.0.0.1 (ephemeral port) serving ``root``; stops on exit or after ``lifetime`` s."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(lifetime, server.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def served(tmp_path, blog_raw, monkeypatch):
    """Fixture archives, a corrupted copy, and the server's URL."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "www"
    (root / "bad").mkdir(parents=True)
    blog = write_blog_zip(root / "blogfeedback.zip", *blog_raw)
    cifar = write_cifar_tar(root / "cifar-10-python.tar.gz", write_cifar(tmp_path / "cifar-src", n=30))
    for good in (blog, cifar):
        damaged = bytearray(good.read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF
        (root / "bad" / good.name).write_bytes(bytes(damaged))
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (blog, cifar)}
    with local_server(root) as url:
        yield url, sums


def test_download_blogfeedback(tmp_path, served, blog_dir):
    url, sums = served
    cache = tmp_path / "dl"
    ds = load_blogfeedback(cache, download=True, url=f"{url}/blogfeedback.zip", sha256=sums["blogfeedback.zip"])
    ref = load_blogfeedback(blog_dir)
    np.testing.assert_array_equal(ds.X, ref.X)
    assert [p.name for p in cache.iterdir()] == ["blogfeedback.zip"]
    # a verified copy is reused without the network (this URL refuses connections)
    again = load_blogfeedback(cache, download=True, url="http://127.0.0.1:9/blogfeedback.zip",
                              sha256=sums["blogfeedback.zip"])
    np.testing.assert_array_equal(again.y, ds.y)


def test_download_cifar10(tmp_path, served):
    url, sums = served
    cache = tmp_path / "dl"
    ds = load_cifar10(cache, download=True, n_clients=3, partition="iid",
                      url=f"{url}/cifar-10-python.tar.gz", sha256=sums["cifar-10-python.tar.gz"])
    assert ds.n_samples == 150 and ds.test.n_samples == 30
    assert [p.name for p in cache.iterdir()] == ["cifar-10-python.tar.gz"]


@pytest.mark.parametrize("name", ["blogfeedback.zip", "cifar-10-python.tar.gz"])
def test_download_rejects_corrupted_file(tmp_path, served, name):
    url, sums = served
    cache = tmp_path / "dl"
    loader = load_blogfeedback if name.startswith("blog") else load_cifar10
    with pytest.raises(ChecksumError, match=f"sha256 mismatch for {url}/bad/{name}"):
        loader(cache, download=True, url=f"{url}/bad/{name}", sha256=sums[name])
    assert list(cache.iterdir()) == []  # no partial or unverified file left
    # a stale corrupted copy in the cache is replaced by a verified download
    (cache / name).write_bytes(b"stale")
    download_file(f"{url}/{name}", sums[name], cache / name)
    assert hashlib.sha256((cache / name).read_bytes()).hexdigest() == sums[name]


def test_download_errors(tmp_path, served):
    url, sums = served
    with pytest.raises(OSError, match=f"download of {url}/missing.zip failed"):
        download_file(f"{url}/missing.zip", sums["blogfeedback.zip"], tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists() and list(tmp_path.glob(".x.zip*")) == []
    with pytest.raises(ValueError, match="http"):
        download_file("file:///etc/passwd", sums["blogfeedback.zip"], tmp_path / "y")
    with pytest.raises(ValueError, match="sha256"):
        download_file(f"{url}/blogfeedback.zip", "abc", tmp_path / "y")


def test_remote_registry_and_cache_dir(monkeypatch, tmp_path):
    for url, sha, filename in REMOTE_FILES.values():
        assert url.startswith("https://") and len(sha) == 64 and filename
    monkeypatch.setenv("PROXFED_DATA", str(tmp_path / "d"))
    assert default_cache_dir() == tmp_path / "d"
    monkeypatch.delenv("PROXFED_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "proxfed"


# --------------------------------------------------------------------------- FedProx Synthetic(alpha, beta)

def test_fedprox_synthetic_is_deterministic():
    a = make_fedprox_synthetic(1.0, 1.0, seed=4)
    b = make_fedprox_synthetic(1.0, 1.0, seed=4)
    c = make_fedprox_synthetic(1.0, 1.0, seed=5)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.X.shape[0] != c.X.shape[0] or not np.array_equal(a.X, c.X)
    assert a.n_clients == 30 and a.n_features == 60 and a.y.dtype == np.int64
    assert a.y.min() >= 0 and a.y.max() < 10
    # labels are the argmax of each client's true linear model
    for k in (0, 7):
        X, y = a.client(k)
        np.testing.assert_array_equal(y, np.argmax(X @ a.meta["W"][k] + a.meta["b"][k], axis=1))
    # client k does not depend on the number of clients
    small = make_fedprox_synthetic(1.0, 1.0, n_clients=3, seed=4)
    np.testing.assert_array_equal(small.client(2)[0], a.client(2)[0])
    # sizes: floor(LogNormal(4, 2)) + 50, of which floor(0.9 m) train
    m = a.client_sizes + np.diff(a.meta["test_offsets"])
    assert m.min() >= 50 and np.all(a.client_sizes == np.floor(0.9 * m))


def test_fedprox_synthetic_heterogeneity():
    def spread(ds):
        means = np.array([X.mean(axis=0) for X, _ in ds.clients()])
        return means.std(axis=0).mean()

    iid_like = make_fedprox_synthetic(0.0, 0.0, seed=1)
    hetero = make_fedprox_synthetic(1.0, 1.0, seed=1)
    assert spread(hetero) > spread(iid_like)
    with pytest.raises(ValueError, match="alpha"):
        make_fedprox_synthetic(-1.0, 0.0)
    with pytest.raises(ValueError, match="test_fraction"):
        make_fedprox_synthetic(test_fraction=1.0)
    with pytest.raises(ValueError, match="n_classes"):
        make_fedprox_synthetic(n_classes=1)


# --------------------------------------------------------------------------- real data (../shared/data)

@pytest.fixture(scope="module")
def _memo():
    return {}


@pytest.fixture
def real_blog(shared_data, _memo, tmp_path_factory):
    """The real BlogFeedback, parsed once per module (into an .npz cache, timed)."""
    if "blog" not in _memo:
        cache = tmp_path_factory.mktemp("blog-cache")
        t0 = time.perf_counter()
        ds = load_blogfeedback(shared_data / "blogfeedback", cache_dir=cache)
        _memo["blog"] = (ds, time.perf_counter() - t0, cache)
    return _memo["blog"]


@pytest.fixture
def real_femnist(shared_data, _memo):
    if "femnist" not in _memo:
        _memo["femnist"] = load_femnist(shared_data / "femnist", n_writers=None)
    return _memo["femnist"]


@pytest.mark.data
def test_real_blogfeedback_counts(real_blog):
    ds, _, _ = real_blog
    assert ds.n_clients == 554
    assert ds.n_samples == 47_157
    assert ds.n_features == 281
    assert ds.validation.n_samples == 5_240
    assert ds.test.n_samples == 7_624
    assert ds.client_sizes.sum() == 47_157
    assert ds.X[:, :-1].min() == 0.0 and ds.X[:, :-1].max() == 1.0 and np.all(ds.X[:, -1] == 1)
    assert ds.meta["constant_columns"].tolist() == [12, 32, 37, 277]  # UCI columns 13, 33, 38, 278
    assert len(ds.meta["test_files"]) == 60 and np.all(ds.meta["test_client"] >= 0)
    assert ds.y.min() == 0 and ds.y.max() <= 1424


@pytest.mark.data
def test_real_blogfeedback_cache_is_faster(real_blog, shared_data):
    ds, csv_seconds, cache = real_blog
    t0 = time.perf_counter()
    again = load_blogfeedback(shared_data / "blogfeedback", cache_dir=cache)
    cache_seconds = time.perf_counter() - t0
    np.testing.assert_array_equal(again.X, ds.X)
    np.testing.assert_array_equal(again.test.y, ds.test.y)
    print(f"BlogFeedback load: CSV {csv_seconds:.2f} s, .npz cache {cache_seconds:.2f} s")
    assert cache_seconds < csv_seconds / 2


@pytest.mark.data
def test_real_blogfeedback_client_sizes(real_blog, tmp_path):
    ds, _, _ = real_blog
    table = client_size_table(ds)
    assert table.splitlines()[-1].startswith("N=554 n=47157")
    pytest.importorskip("matplotlib")
    plot_client_sizes(ds, tmp_path / "figure5.png", title="BlogFeedback: rows per client")
    assert (tmp_path / "figure5.png").stat().st_size > 1000


@pytest.mark.data
def test_real_femnist_counts(real_femnist):
    ds = real_femnist
    assert ds.n_clients == 105
    assert ds.n_samples == 14_640
    assert ds.test.n_samples == 1_677
    assert ds.meta["test_offsets"][-1] == 1_677
    assert np.unique(np.concatenate([ds.y, ds.test.y])).size == 62 and ds.y.max() == 61
    assert ds.y.dtype == np.int64
    assert 0.8 < (ds.X == 1.0).mean() < 0.9  # LEAF: 1.0 = white background
    rep = partition_report(ds, n_classes=62)
    assert rep.counts.sum() == 14_640


@pytest.mark.data
def test_real_femnist_first_100_writers(real_femnist, shared_data):
    ds = load_femnist(shared_data / "femnist")
    assert ds.n_clients == 100
    assert ds.meta["writers"] == real_femnist.meta["writers"][:100]
    assert ds.n_samples == int(real_femnist.client_sizes[:100].sum())
    assert ds.test.n_samples == int(real_femnist.meta["test_offsets"][100])


@pytest.mark.data
@pytest.mark.slow
def test_real_femnist_seeded_sample(shared_data):
    a = load_femnist(shared_data / "femnist", sample=True, seed=1)
    b = load_femnist(shared_data / "femnist", sample=True, seed=1)
    assert a.meta["writers"] == b.meta["writers"] and a.n_clients == 100
    np.testing.assert_array_equal(a.X, b.X)


@pytest.mark.data
@pytest.mark.slow
def test_real_blogfeedback_any_seed_keeps_554_clients(shared_data):
    for seed in (11, 12):  # seed 11 drops a 3-row blog with a plain random row split
        ds = load_blogfeedback(shared_data / "blogfeedback", seed=seed)
        assert (ds.n_clients, ds.n_samples, ds.validation.n_samples) == (554, 47_157, 5_240)
