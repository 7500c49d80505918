"""refsnn.harness.datasets without the network: IDX and N-MNIST formats, search order, checksums, errors, loaders.

The helpers at the top (isolated environment, hand-written IDX encoder, manifest entries for generated
files) are also used by tests/test_datasets_download.py.
"""
import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from refsnn.harness import datasets


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $REFSNN_DATA, no offline flag, a private cache dir; the per-process checksum memory emptied."""
    monkeypatch.delenv("REFSNN_DATA", raising=False)
    monkeypatch.delenv("REFSNN_OFFLINE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(datasets, "_VERIFIED", {})
    return tmp_path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def idx_bytes(arr: np.ndarray, code: int) -> bytes:
    """IDX encoding written out by hand from the format's definition (independent of refsnn.write_idx)."""
    be = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(be).tobytes()


def gz(data: bytes, mtime: int = 0) -> bytes:
    return gzip.compress(data, mtime=mtime)


def small_mnist(seed: int, n_train=30, n_test=20, n_classes=10):
    """Random images/labels for a fake MNIST-like dataset, and its four .gz files' bytes."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(n_train) % n_classes).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.permutation(np.arange(n_test) % n_classes).astype(np.uint8),
    }
    files = {name: gz(idx_bytes(a, 0x08)) for name, a in arrays.items()}
    return arrays, files


def source_for(name: str, files: dict, *, mirrors=(), md5_only=False, raw=False, **kw) -> datasets.Source:
    """A manifest entry whose checksums are those of ``files`` (bytes by file name)."""
    res = []
    for fname, data in files.items():
        split = "train" if fname.startswith("train") else "test" if fname.startswith(("t10k", "test")) else "all"
        res.append(datasets.Resource(
            fname, split, sha256=None if md5_only else sha256(data), md5=md5(data), size=len(data),
            raw_sha256=sha256(gzip.decompress(data)) if raw else None))
    return datasets.Source(name, resources=tuple(res), mirrors=tuple(mirrors), **kw)


def write_files(folder: Path, files: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for fname, data in files.items():
        (folder / fname).write_bytes(data)
    return folder


# ------------------------------------------------------------------------------------------------
# IDX
# ------------------------------------------------------------------------------------------------

IDX_CASES = [
    (0x08, np.uint8, [0, 1, 127, 255]),
    (0x09, np.int8, [-128, -1, 0, 127]),
    (0x0B, np.int16, [-32768, -2, 1, 32767]),
    (0x0C, np.int32, [-(2**31), -3, 70000, 2**31 - 1]),
    (0x0D, np.float32, [-1.5, 0.0, 3.25e-5, 6.5e4]),
    (0x0E, np.float64, [-1e300, -0.0, 1e-300, np.pi]),   # test data, not a tolerance
]


@pytest.mark.parametrize("code,dtype,values", IDX_CASES, ids=[f"0x{c[0]:02X}" for c in IDX_CASES])
@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gzip"])
def test_idx_every_type_code_round_trips_and_matches_the_format(tmp_path, code, dtype, values, compressed):
    """read_idx reads hand-encoded big-endian bytes exactly; write_idx writes exactly those bytes."""
    arr = np.resize(np.array(values, dtype=dtype), (3, 2, 5))
    data = idx_bytes(arr, code)
    path = tmp_path / ("a.idx.gz" if compressed else "a.idx")
    path.write_bytes(gz(data) if compressed else data)
    got = datasets.read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative and got.shape == (3, 2, 5)
    np.testing.assert_array_equal(got, arr)
    out = datasets.write_idx(tmp_path / ("b.idx.gz" if compressed else "b.idx"), arr)
    written = out.read_bytes()
    assert (gzip.decompress(written) if compressed else written) == data
    np.testing.assert_array_equal(datasets.read_idx(out), arr)
    with open(path, "rb") as f:  # a file object works too
        np.testing.assert_array_equal(datasets.read_idx(f), arr)


def test_idx_write_refuses_types_it_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="IDX stores"):
        datasets.write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.uint16))


GOOD = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4), 0x08)
BAD_FILES = {
    "empty": (b"", "shorter than the 4-byte magic"),
    "wrong-magic": (b"\x01" + GOOD[1:], "magic number 01000802"),
    "unknown-type": (GOOD[:2] + b"\x0a" + GOOD[3:], "magic number 00000a02"),
    "zero-dims": (b"\x00\x00\x08\x00", "0 dimensions"),
    "truncated-header": (GOOD[:9], "truncated IDX header"),
    "truncated-data": (GOOD[:-1], r"truncated: header says shape \(3, 4\).*12 data bytes, file has 11"),
    "trailing-bytes": (GOOD + b"\x00", "has trailing bytes.*file has 13"),
    "truncated-gzip": (gz(GOOD)[:-6], "corrupt or truncated gzip"),
    "corrupt-gzip": (gz(GOOD)[:12] + bytes(b ^ 0xFF for b in gz(GOOD)[12:20]) + gz(GOOD)[20:],
                     "corrupt or truncated gzip"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_idx_malformed_files_are_refused_naming_file_and_fault(tmp_path, case):
    data, message = BAD_FILES[case]
    path = tmp_path / f"{case}.idx"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message) as info:
        datasets.read_idx(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------------------------
# Where files are looked for; what is said when they are not there
# ------------------------------------------------------------------------------------------------


def test_search_order_is_root_env_cache_system_read_at_call_time(isolated, monkeypatch):
    root, env = isolated / "root", isolated / "env"
    cache = isolated / "xdg-cache" / "refsnn"
    dirs = datasets.search_dirs("fashion-mnist", root=root)
    assert dirs == [root / "fashion-mnist", root, root / "FashionMNIST/raw", cache / "fashion-mnist",
                    cache / "FashionMNIST/raw", Path("/usr/share/datasets/fashion-mnist")]
    monkeypatch.setenv("REFSNN_DATA", str(env))  # after import: must still be seen
    dirs = datasets.search_dirs("mnist")
    assert dirs == [env / "mnist", env / "MNIST/raw", cache / "mnist", cache / "MNIST/raw"]
    assert datasets.data_home() == env and datasets.data_home(root) == root
    monkeypatch.delenv("REFSNN_DATA")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(isolated / "home"))
    assert datasets.data_home() == isolated / "home" / ".cache" / "refsnn"


def test_find_takes_the_first_folder_in_search_order(isolated, monkeypatch):
    arrays, files = small_mnist(0)
    monkeypatch.setitem(datasets.MANIFEST, "mnist", source_for("mnist", files, torchvision_dir="MNIST/raw"))
    root, env, cache = isolated / "root", isolated / "env", isolated / "xdg-cache" / "refsnn"
    monkeypatch.setenv("REFSNN_DATA", str(env))
    write_files(cache / "MNIST" / "raw", files)  # torchvision's layout in the cache: last resort here
    assert datasets.find("mnist", "test")["t10k-images-idx3-ubyte.gz"].parent == cache / "MNIST" / "raw"
    write_files(cache / "mnist", files)
    assert datasets.find("mnist", "test")["t10k-images-idx3-ubyte.gz"].parent == cache / "mnist"
    write_files(env / "mnist", files)
    assert datasets.find("mnist", "test")["t10k-images-idx3-ubyte.gz"].parent == env / "mnist"
    write_files(root, files)
    assert datasets.find("mnist", "test", root=root)["t10k-images-idx3-ubyte.gz"].parent == root
    write_files(root / "mnist", files)
    assert datasets.find("mnist", "test", root=root)["t10k-images-idx3-ubyte.gz"].parent == root / "mnist"


def test_load_returns_the_files_arrays_with_documented_types(isolated, monkeypatch):
    arrays, files = small_mnist(1)
    monkeypatch.setitem(datasets.MANIFEST, "mnist", source_for("mnist", files))
    write_files(isolated / "data" / "mnist", files)
    for split, stem in (("train", "train"), ("test", "t10k")):
        X, y = datasets.load("mnist", split, root=isolated / "data")
        assert X.dtype == np.uint8 and X.shape == arrays[f"{stem}-images-idx3-ubyte.gz"].shape
        assert y.dtype == np.int64 and y.shape == (len(X),)
        np.testing.assert_array_equal(X, arrays[f"{stem}-images-idx3-ubyte.gz"])
        np.testing.assert_array_equal(y, arrays[f"{stem}-labels-idx1-ubyte.gz"])
    X, y = datasets.load("mnist", "test", root=isolated / "data", limit=7)
    np.testing.assert_array_equal(X, arrays["t10k-images-idx3-ubyte.gz"][:7])
    assert len(y) == 7


def test_missing_dataset_raises_one_actionable_error(isolated):
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load("mnist", "train", root=isolated / "nowhere")
    msg = str(info.value)
    src = datasets.MANIFEST["mnist"]
    for res in src.files("train"):
        assert res.filename in msg and res.sha256 in msg and res.md5 in msg  # files and checksums
    assert "t10k-images" not in msg  # only the files this split needs
    for d in datasets.search_dirs("mnist", isolated / "nowhere"):
        assert str(d) in msg  # where it looked
    assert f"Put the files in {isolated / 'nowhere' / 'mnist'}/" in msg  # where to put them
    assert "refsnn data fetch mnist --root" in msg  # the command that fetches them
    assert src.mirrors[0] + "train-images-idx3-ubyte.gz" in msg


def test_a_wrong_file_is_refused_naming_it_and_the_fix(isolated, monkeypatch):
    arrays, files = small_mnist(2)
    monkeypatch.setitem(datasets.MANIFEST, "mnist", source_for("mnist", files))
    _, other = small_mnist(3)
    folder = write_files(isolated / "d" / "mnist", {**files, "t10k-labels-idx1-ubyte.gz":
                                                    other["t10k-labels-idx1-ubyte.gz"]})
    datasets.load("mnist", "train", root=isolated / "d")  # the train files are fine
    with pytest.raises(datasets.ChecksumError, match="t10k-labels-idx1-ubyte.gz.*expected sha256") as info:
        datasets.load("mnist", "test", root=isolated / "d")
    assert str(folder / "t10k-labels-idx1-ubyte.gz") in str(info.value)
    assert "refsnn data fetch mnist" in str(info.value)
    rows = {r[0]: r[2] for r in datasets.checksums("mnist", root=isolated / "d")}
    assert rows["t10k-labels-idx1-ubyte.gz"] == "mismatch" and rows["train-images-idx3-ubyte.gz"] == "ok"


def test_recompressed_copy_is_accepted_by_its_content_and_only_by_it(isolated, monkeypatch):
    """Debian's Fashion-MNIST case: same content under another gzip header."""
    arrays, files = small_mnist(4)
    monkeypatch.setitem(datasets.MANIFEST, "mnist", source_for("mnist", files, raw=True))
    recompressed = {k: gz(gzip.decompress(v), mtime=1234567) for k, v in files.items()}
    assert all(recompressed[k] != files[k] for k in files)
    write_files(isolated / "d" / "mnist", recompressed)
    X, _ = datasets.load("mnist", "train", root=isolated / "d")
    np.testing.assert_array_equal(X, arrays["train-images-idx3-ubyte.gz"])
    assert all("decompressed content" in r[3] for r in datasets.checksums("mnist", root=isolated / "d"))
    # without a content checksum, the same copy is refused
    monkeypatch.setitem(datasets.MANIFEST, "mnist", source_for("mnist", files, raw=False))
    monkeypatch.setattr(datasets, "_VERIFIED", {})
    with pytest.raises(datasets.ChecksumError):
        datasets.load("mnist", "train", root=isolated / "d")


def test_md5_only_entries_are_checked_by_md5(isolated, monkeypatch):
    arrays, files = small_mnist(5)
    monkeypatch.setitem(datasets.MANIFEST, "mnist", source_for("mnist", files, md5_only=True))
    res = datasets.MANIFEST["mnist"].resources[0]
    assert res.sha256 is None and "no SHA-256 published; checked by MD5" in res.checksum_text()
    write_files(isolated / "d" / "mnist", files)
    datasets.load("mnist", "train", root=isolated / "d")
    assert all(r[2] == "ok" and r[3].startswith("md5") for r in datasets.checksums("mnist", root=isolated / "d"))
    _, other = small_mnist(6)
    (isolated / "d" / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(other["train-images-idx3-ubyte.gz"])
    with pytest.raises(datasets.ChecksumError, match="expected md5"):
        datasets.load("mnist", "train", root=isolated / "d")


def test_a_resource_must_carry_a_wellformed_checksum():
    with pytest.raises(ValueError, match="give a sha256 or an md5"):
        datasets.Resource("x.gz", "train")
    with pytest.raises(ValueError, match="sha256 must be 64 lowercase hex"):
        datasets.Resource("x.gz", "train", sha256="abc")


def test_manifest_entries_are_complete():
    """Every file has an MD5 (cross-reference) and every IDX/EMNIST file a SHA-256 and size."""
    for key, src in datasets.MANIFEST.items():
        assert src.resources and (src.mirrors or all(r.urls for r in src.resources)), key
        for r in src.resources:
            assert r.md5, (key, r.filename)
            if key != "n-mnist":
                assert r.sha256 and r.size, (key, r.filename)
    assert all(r.raw_sha256 for r in datasets.MANIFEST["fashion-mnist"].resources)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="name"):
        datasets.load("cifar10")
    with pytest.raises(ValueError, match="split"):
        datasets.load("digits", "validation")
    with pytest.raises((TypeError, ValueError), match="limit"):
        datasets.load("digits", limit=0)


def test_n_classes_of_every_name():
    expected = {"digits": 10, "fashion-mnist": 10, "mnist": 10, "emnist": 47, "emnist-balanced": 47,
                "emnist-letters": 26, "emnist-digits": 10, "emnist-byclass": 62, "emnist-bymerge": 47,
                "emnist-mnist": 10, "n-mnist": 10, "synthetic": 4}
    assert {n: datasets.n_classes(n) for n in datasets.NAMES} == expected


# ------------------------------------------------------------------------------------------------
# Bundled digits and EMNIST
# ------------------------------------------------------------------------------------------------


def test_digits_split_and_range():
    from sklearn.datasets import load_digits

    Xtr, ytr = datasets.load("digits", "train")
    Xte, yte = datasets.load("digits", "test")
    assert Xtr.shape == (1438, 8, 8) and Xte.shape == (359, 8, 8) and Xtr.dtype == np.uint8
    assert ytr.dtype == np.int64 and set(ytr) == set(yte) == set(range(10))
    d = load_digits()
    np.testing.assert_array_equal(Xte[0], np.rint(d.images[4] * 255 / 16))  # sample 4 is the first test sample


@pytest.mark.parametrize("variant", ["letters", "balanced"])
def test_emnist_is_read_from_the_archive_upright_with_labels_from_zero(isolated, monkeypatch, variant):
    rng = np.random.default_rng(7)
    n_cls = datasets.EMNIST_VARIANTS[variant]
    upright = {s: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for s, n in (("train", 12), ("test", 8))}
    labels = {s: np.arange(len(upright[s])) % n_cls for s in upright}
    stored_offset = 1 if variant == "letters" else 0  # EMNIST letters are numbered 1..26 in the files
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for s in upright:
            zf.writestr(f"gzip/emnist-{variant}-{s}-images-idx3-ubyte.gz",
                        gz(idx_bytes(upright[s].transpose(0, 2, 1), 0x08)))  # stored transposed
            zf.writestr(f"gzip/emnist-{variant}-{s}-labels-idx1-ubyte.gz",
                        gz(idx_bytes((labels[s] + stored_offset).astype(np.uint8), 0x08)))
    monkeypatch.setitem(datasets.MANIFEST, "emnist", source_for("emnist", {"gzip.zip": buf.getvalue()}))
    write_files(isolated / "d" / "emnist", {"gzip.zip": buf.getvalue()})
    name = "emnist" if variant == "balanced" else f"emnist-{variant}"
    for s in upright:
        X, y = datasets.load(name, s, root=isolated / "d")
        np.testing.assert_array_equal(X, upright[s])
        np.testing.assert_array_equal(y, labels[s])
        assert X.flags.c_contiguous and y.dtype == np.int64
    if variant == "letters":  # a variant absent from the archive is named in the error
        with pytest.raises(ValueError, match="no member.*emnist-digits-train-images"):
            datasets.load("emnist-digits", root=isolated / "d")


# ------------------------------------------------------------------------------------------------
# N-MNIST events
# ------------------------------------------------------------------------------------------------


def encode_events(events) -> bytes:
    """N-MNIST bytes for ``(x, y, p, t23)`` tuples, packed from the format description (40 bits per event)."""
    out = b""
    for x, y, p, t in events:
        assert 0 <= t < 2**23
        word = (x << 32) | (y << 24) | (p << 23) | t
        out += word.to_bytes(5, "big")
    return out


def test_nmnist_reader_decodes_fields_and_the_overflow_marker():
    rng = np.random.default_rng(0)
    n = 50
    x, y = rng.integers(0, 34, n), rng.integers(0, 34, n)
    p, t = rng.integers(0, 2, n), np.sort(rng.integers(0, 2**23, n))
    raw = list(zip(x, y, p, t))
    markers_after = (9, 30, 30)  # overflow markers after events 9 and 30 (twice)
    stream = []
    for i, ev in enumerate(raw):
        stream.append(tuple(int(v) for v in ev))
        stream += [(0, 240, 0, 0)] * markers_after.count(i)
    events = datasets.read_nmnist(encode_events(stream))
    assert events.dtype == datasets.EVENT_DTYPE and len(events) == n
    shift = np.array([2**13 * sum(m < i for m in markers_after) for i in range(n)])
    np.testing.assert_array_equal(events["x"], x)
    np.testing.assert_array_equal(events["y"], y)
    np.testing.assert_array_equal(events["p"], p)
    np.testing.assert_array_equal(events["t"], t + shift)
    assert events["t"][10] - t[10] == 2**13 and events["t"][31] - t[31] == 2 * 2**13 + 2**13
    other = datasets.read_nmnist(encode_events(stream), overflow_increment=2**23)
    np.testing.assert_array_equal(other["t"], t + shift // 2**13 * 2**23)


def test_nmnist_reader_refuses_a_truncated_file(tmp_path):
    path = tmp_path / "00001.bin"
    path.write_bytes(encode_events([(1, 2, 1, 100), (3, 4, 0, 200)])[:-2])
    with pytest.raises(ValueError, match=f"{path}: 8 bytes is not a whole number of 5-byte events"):
        datasets.read_nmnist(path)


def bin_naive(events, T, duration, H=34, W=34):
    out = np.zeros((T, 2, H, W))
    for ev in events:
        if ev["t"] < duration:
            k = int(np.floor(ev["t"] * T / duration))
            out[k, ev["p"], ev["y"], ev["x"]] += 1
    return out.reshape(T, -1)


def test_bin_events_matches_a_loop_over_events():
    rng = np.random.default_rng(1)
    ev = np.zeros(400, dtype=datasets.EVENT_DTYPE)
    ev["x"], ev["y"], ev["p"] = rng.integers(0, 34, 400), rng.integers(0, 34, 400), rng.integers(0, 2, 400)
    ev["t"] = np.sort(rng.integers(0, 310_000, 400))
    ev["x"][:3], ev["y"][:3], ev["p"][:3], ev["t"][:3] = 5, 6, 1, 7  # a repeated event: count 3, spike 1
    for T, duration in ((10, 300_000), (7, None)):
        d = duration if duration is not None else int(ev["t"].max()) + 1
        counts = datasets.bin_events(ev, T, duration=duration, count=True)
        spikes = datasets.bin_events(ev, T, duration=duration)
        expected = bin_naive(ev, T, d)
        assert counts.shape == spikes.shape == (T, 2312) and spikes.dtype == np.float64
        np.testing.assert_array_equal(counts, expected)
        np.testing.assert_array_equal(spikes, np.minimum(expected, 1))
    assert datasets.bin_events(ev, 10, duration=300_000, count=True).sum() == np.sum(ev["t"] < 300_000)
    assert datasets.bin_events(ev, 4, count=True)[0, 1 * 34 * 34 + 6 * 34 + 5] >= 3
    with pytest.raises(ValueError, match="0 <= x < 34"):
        bad = ev.copy()
        bad["x"][0] = 34
        datasets.bin_events(bad, 5)
    with pytest.raises(TypeError, match="structured array"):
        datasets.bin_events(np.zeros((3, 4)), 5)


def _nmnist_fixture(counts):
    """Bytes of N-MNIST-like archives (``Train/<digit>/<n>.bin``) and the events of each sample."""
    rng = np.random.default_rng(2)
    archives, truth = {}, {}
    for split, folder, n in (("train", "Train", counts["train"]), ("test", "Test", counts["test"])):
        buf = io.BytesIO()
        truth[split] = []
        with zipfile.ZipFile(buf, "w") as zf:
            for i in range(n):
                label = int(rng.integers(0, 10))
                k = int(rng.integers(1, 20))
                evs = [(int(a), int(b), int(c), int(d)) for a, b, c, d in
                       zip(rng.integers(0, 34, k), rng.integers(0, 34, k), rng.integers(0, 2, k),
                           np.sort(rng.integers(0, 300_000, k)))]
                zf.writestr(f"{folder}/{label}/{i + 1:05d}.bin", encode_events(evs))
                truth[split].append((label, evs))
        archives[f"{split}.zip"] = buf.getvalue()
    return archives, truth


@pytest.mark.parametrize("layout", ["archive", "extracted"])
def test_nmnist_loads_from_archive_or_extracted_tree(isolated, monkeypatch, layout):
    counts = {"train": 12, "test": 6}
    archives, truth = _nmnist_fixture(counts)
    src = source_for("n-mnist", archives, md5_only=True, n_samples=tuple(counts.items()))
    monkeypatch.setitem(datasets.MANIFEST, "n-mnist", src)
    folder = isolated / "d" / "n-mnist"
    if layout == "archive":
        write_files(folder, archives)
    else:
        for name, data in archives.items():
            zipfile.ZipFile(io.BytesIO(data)).extractall(folder)
    for split in counts:
        X, y = datasets.load("n-mnist", split, root=isolated / "d")
        assert X.dtype == object and X.shape == (counts[split],) and y.dtype == np.int64
        np.testing.assert_array_equal(y, [label for label, _ in truth[split]])  # file-number order
        for ev, (_, raw) in zip(X, truth[split]):
            assert ev.dtype == datasets.EVENT_DTYPE
            np.testing.assert_array_equal(ev["t"], [r[3] for r in raw])
            np.testing.assert_array_equal(ev["x"], [r[0] for r in raw])
    X, y = datasets.load("n-mnist", "train", root=isolated / "d", limit=5)
    assert len(X) == len(y) == 5
    status = {r[0]: r[2] for r in datasets.checksums("n-mnist", root=isolated / "d")}
    assert set(status.values()) == ({"ok"} if layout == "archive" else {"unverified"})


def test_nmnist_extracted_tree_with_missing_files_is_not_taken(isolated, monkeypatch):
    counts = {"train": 12, "test": 6}
    archives, _ = _nmnist_fixture(counts)
    monkeypatch.setitem(datasets.MANIFEST, "n-mnist",
                        source_for("n-mnist", archives, md5_only=True, n_samples=tuple(counts.items())))
    folder = isolated / "d" / "n-mnist"
    zipfile.ZipFile(io.BytesIO(archives["train.zip"])).extractall(folder)
    next((folder / "Train").rglob("*.bin")).unlink()
    with pytest.raises(datasets.DatasetNotFoundError, match="train.zip"):
        datasets.load("n-mnist", "train", root=isolated / "d")
    assert {r[0]: r[2] for r in datasets.checksums("n-mnist", root=isolated / "d")}["train.zip"] == "mismatch"


# ------------------------------------------------------------------------------------------------
# The synthetic spike-pattern set
# ------------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_balanced_binary():
    X, y = datasets.load("synthetic", "train")
    X2, y2 = datasets.load("synthetic", "train")
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert X.shape == (240, 20, 32) and X.dtype == np.float64 and y.dtype == np.int64
    assert set(np.unique(X)) == {0.0, 1.0}
    assert np.bincount(y).tolist() == [60] * 4
    Xte, _ = datasets.load("synthetic", "test")
    assert Xte.shape == (120, 20, 32) and not np.array_equal(Xte[:5], X[:5])
    Xo, _ = datasets.synthetic_spikes(240, seed=1)
    assert not np.array_equal(Xo, X)


def test_synthetic_flip_rate_and_class_separation():
    """Samples are their class prototype with iid flips at rate q = 0.05.

    Prototype recovery: with 60 samples per class and q < 1/2, the per-entry
    majority vote is the prototype except with probability P(Bin(60, q) >= 30)
    < 1e-20, so it recovers the prototypes exactly (for both splits: they share them).
    Flip rate: the fraction of the N = 240 * 20 * 32 = 153600 entries that differ
    from the prototype is Bin(N, q) / N, sd sqrt(q (1-q) / N) = 5.6e-4; we allow
    6 sd (two-sided probability < 2e-9).
    Separation: two prototypes (density d = 0.2) differ on ~ 2 d (1-d) = 0.32 of
    the 640 entries, ~205; a sample is ~ Bin(640, 0.05) ~ 32 +- 5.5 from its own
    prototype and ~ 205 (1 - 2q) + 32 ~ 216 from another, so nearest-prototype
    classification must be perfect (a 30-sd gap).
    """
    q = 0.05
    X, y = datasets.load("synthetic", "train")
    Xt, yt = datasets.load("synthetic", "test")
    protos = np.stack([(X[y == c].mean(axis=0) > 0.5) for c in range(4)]).astype(float)
    protos_t = np.stack([(Xt[yt == c].mean(axis=0) > 0.5) for c in range(4)]).astype(float)
    np.testing.assert_array_equal(protos, protos_t)
    rate = np.mean(X != protos[y])
    assert abs(rate - q) < 6 * np.sqrt(q * (1 - q) / X.size)
    dist = np.abs(Xt[:, None] - protos[None]).sum(axis=(2, 3))
    assert np.all(dist.argmin(axis=1) == yt)


# ------------------------------------------------------------------------------------------------
# The real Fashion-MNIST from Debian's package
# ------------------------------------------------------------------------------------------------

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_debian = pytest.mark.skipif(
    not (DEBIAN_FMNIST / "t10k-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed (data_scripts/install_fashion_mnist_debian.sh)")


@needs_debian
def test_debian_fashion_mnist_loads_verified_with_the_published_counts(isolated):
    Xtr, ytr = datasets.load("fashion-mnist", "train")
    Xte, yte = datasets.load("fashion-mnist", "test")
    assert Xtr.shape == (60000, 28, 28) and Xte.shape == (10000, 28, 28)
    assert Xtr.dtype == Xte.dtype == np.uint8 and ytr.dtype == yte.dtype == np.int64
    assert np.bincount(yte, minlength=10).tolist() == [1000] * 10
    assert np.bincount(ytr, minlength=10).tolist() == [6000] * 10
    assert Xtr.max() == 255 and Xtr.min() == 0
    rows = datasets.checksums("fashion-mnist")
    assert [r[2] for r in rows] == ["ok"] * 4 and all(r[1].parent == DEBIAN_FMNIST for r in rows)


def test_train_refuses_event_streams_with_a_clear_error(monkeypatch):
    from refsnn.harness import train as train_mod

    events = np.empty(4, dtype=object)
    events[:] = [np.zeros(3, dtype=datasets.EVENT_DTYPE)] * 4
    monkeypatch.setattr(datasets, "load", lambda *a, **k: (events, np.zeros(4, dtype=np.int64)))
    with pytest.raises(ValueError, match="event streams.*bin_events"):
        train_mod.train("stbp", "n-mnist", epochs=1, progress=False, log=None)


@needs_debian
@pytest.mark.parametrize("algo", __import__("refsnn").available_algorithms())
def test_train_runs_on_fashion_mnist(isolated, algo):
    """``refsnn train ALGO --dataset fashion-mnist`` works for every algorithm in the package (one short epoch)."""
    from refsnn.harness.train import train

    metrics = train(algo, "fashion-mnist", epochs=1, limit_train=64, limit_test=32, progress=False, log=None,
                    seed=0)
    assert metrics["n_train"] == 64 and metrics["n_test"] == 32
    assert metrics["sizes"][0] == 784 and metrics["sizes"][-1] == 10
    assert len(metrics["history"]) == 1 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert np.isfinite(metrics["history"][0]["train_loss"])


# ------------------------------------------------------------------------------------------------
# data_scripts/ (run as a user would, offline)
# ------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def _run_script(args, tmp_path, **env):
    import os
    import subprocess
    import sys

    full_env = {**os.environ, "REFSNN_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"), "REFSNN_DATA": "",
                "PYTHON": sys.executable, **env}
    cmd = [sys.executable, *args] if args[0].endswith(".py") else ["sh", *args]
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120)


def test_fetch_script_runs_the_cli_and_explains_what_is_missing(tmp_path):
    r = _run_script(["data_scripts/fetch_dataset.py", "mnist"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Offline mode is on" in r.stderr and "refsnn data fetch mnist" in r.stderr
    assert str(tmp_path / "cache" / "refsnn" / "mnist") in r.stderr
    assert not (tmp_path / "cache" / "refsnn" / "mnist").exists()  # nothing written


@needs_debian
def test_fetch_script_finds_and_verifies_debian_fashion_mnist(tmp_path):
    r = _run_script(["data_scripts/fetch_dataset.py", "fashion-mnist", "--no-progress"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("present and verified at /usr/share/datasets/fashion-mnist/") == 4


@needs_debian
@pytest.mark.skipif(__import__("shutil").which("dpkg-query") is None, reason="not a Debian system (no dpkg-query)")
def test_debian_install_script_sees_the_package_and_verifies_it(tmp_path):
    r = _run_script(["data_scripts/install_fashion_mnist_debian.sh"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "already installed" in r.stdout and r.stdout.count(" ok ") == 4
