"""Datasets as plain arrays: found offline, fetched only when asked, always checksummed.

::

    X, y = load("digits")                       # bundled with scikit-learn: no files, no network
    X, y = load("fashion-mnist", "test")        # Debian's package, the cache, $REFSNN_DATA or root=
    X, y = load("mnist", download=True)         # fetched once into the cache, verified, found again

What ``load(name, split)`` returns
----------------------------------
``split`` is ``"train"`` or ``"test"``; ``limit=n`` keeps the first ``n`` samples.

==================  ===================================  ==========  ================  =========================
name                X                                    classes     train / test      files
==================  ===================================  ==========  ================  =========================
``digits``          uint8 (N, 8, 8), 0..255              10          1438 / 359        none (scikit-learn's)
``fashion-mnist``   uint8 (N, 28, 28), 0..255            10          60000 / 10000     4 IDX ``.gz`` files
``mnist``           uint8 (N, 28, 28), 0..255            10          60000 / 10000     4 IDX ``.gz`` files
``emnist-VARIANT``  uint8 (N, 28, 28), 0..255, upright   see below   see below         ``gzip.zip`` (NIST)
``n-mnist``         object (N,) of event arrays          10          60000 / 10000     ``train.zip``, ``test.zip``
``synthetic``       float64 (N, T=20, n_in=32), 0/1      4           240 / 120         none (generated)
==================  ===================================  ==========  ================  =========================

``y`` is always ``int64`` of shape ``(N,)`` with values in ``[0, n_classes(name))``.
Turning images into spikes is :mod:`refsnn.blocks.encoding`'s job; the loaders never do it.

* ``digits``: scikit-learn's bundled 8x8 digits, pixel values 0..16 rescaled to
  0..255 (``round(v * 255 / 16)``).  Fixed split: sample ``i`` (scikit-learn's
  order) is a test sample iff ``i % 5 == 4``.
* ``emnist-VARIANT`` (Cohen et al. 2017, arXiv:1702.05373), VARIANT one of
  ``balanced`` (47 classes, 112800 / 18800), ``letters`` (26, 124800 / 20800),
  ``digits`` (10, 240000 / 40000), ``byclass`` (62, 697932 / 116323),
  ``bymerge`` (47, 697932 / 116323), ``mnist`` (10, 60000 / 10000).
  ``"emnist"`` alone means ``"emnist-balanced"``, the split usually reported.
  The IDX files store every image transposed (they display mirrored and
  rotated; pytorch/vision#8783, tensorflow/datasets#812); ``load`` returns
  them **upright** (``X[i, row, col]`` as for MNIST).  ``letters`` labels are
  1..26 in the files; ``load`` returns 0..25 (``a`` = 0).
* ``n-mnist`` (Orchard et al. 2015): each sample is a structured array of
  events with fields ``x``, ``y`` (uint8, 0..33), ``t`` (int64, microseconds)
  and ``p`` (uint8, 1 = ON, 0 = OFF), see :func:`read_nmnist`; turn one into a
  spike tensor ``(T, 2312)`` with :func:`bin_events`.  Samples come in the
  order of their file numbers (then class), so a ``limit``-ed prefix mixes
  classes.  ``refsnn train`` needs static images and refuses this dataset.
* ``synthetic``: noisy copies of 4 random class spike patterns,
  :func:`synthetic_spikes` with its defaults and seed 0 (deterministic).

Where files are looked for
--------------------------
In this order, reading the environment at *call* time (never at import):

1. ``root`` (the argument): ``root/NAME/``, then ``root/`` itself;
2. ``$REFSNN_DATA/NAME/``;
3. the user cache, ``$XDG_CACHE_HOME/refsnn/NAME/`` (default ``~/.cache/refsnn/NAME/``);
4. system locations: ``/usr/share/datasets/fashion-mnist/`` (Debian's
   ``dataset-fashion-mnist``; ``apt-get install dataset-fashion-mnist``).

Under 1-3, torchvision's layout (``FashionMNIST/raw/``, ``MNIST/raw/``) is
also accepted.  Downloads go to the first of 1-3 that is given
(:func:`data_home`).  A missing dataset raises :class:`DatasetNotFoundError`:
it lists the files, their checksums, the folders searched, where to put the
files and the command that fetches them (``refsnn data fetch NAME``).

Checksums
---------
:data:`MANIFEST` records, for every file, the SHA-256 and size of the file as
published (where known), the MD5 torchvision (or tonic) checks, for
cross-reference, and, where we could compute it, the SHA-256 of the
decompressed content.  A file
is accepted when its SHA-256 matches; when no SHA-256 is known (N-MNIST's
archives: only their MD5 is published, in tonic, and the files could not be
obtained here to hash them) it is checked by **MD5 only**; a re-compressed
copy (Debian's Fashion-MNIST files carry a different gzip header, so their
bytes differ) is accepted when its decompressed content matches.  ``load``
verifies each file the first time a process reads it; ``refsnn data checksums
NAME`` re-checks on demand.  An extracted N-MNIST tree has no published
checksum: it is accepted when its class folders hold the expected number of
``.bin`` files (60000 / 10000), and ``verify`` says it is unverified.  The
EMNIST archive is verified as a whole; each member read from it is guarded by
the zip's CRC-32 and gzip's own CRC.

Downloads (only with ``download=True`` or :func:`fetch`)
--------------------------------------------------------
Each file is tried at each mirror in turn.  Bytes go to ``FILE.part`` beside
the target; only when the whole file is there *and* its checksum matches is it
moved into place with ``os.replace``, so no reader ever sees a half-written
or corrupt file.  A corrupt download is deleted; an interrupted one leaves its
``.part``, which the next fetch resumes with an HTTP Range request (or
restarts, when the server ignores Range).  A tqdm bar shows progress.  With
``offline=True`` or ``REFSNN_OFFLINE=1`` no socket is ever opened.

Your own files and mirrors (this is how the tests run without the network):
``mirrors=[...]`` (base URLs, tried in order) on :func:`fetch` and
:func:`load`, and :data:`MANIFEST`, a plain dict of :class:`Source` entries
that you may extend or override (e.g. ``monkeypatch.setitem``).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsnn.blocks._checks import as_generator, check_choice, check_in_range, check_int
from refsnn.blocks._paths import data_home, env_path, user_cache_dir

__all__ = [
    "load", "n_classes", "NAMES", "read_idx", "write_idx", "read_nmnist", "bin_events", "synthetic_spikes",
    "data_home", "search_dirs", "find", "fetch", "checksums", "describe", "Resource", "Source", "MANIFEST",
    "download", "DatasetNotFoundError", "ChecksumError", "DownloadError", "EVENT_DTYPE", "IDX_TYPES",
    "EMNIST_VARIANTS",
]

# --------------------------------------------------------------------------------------------
# The manifest: every file refsnn knows, where it comes from, and how to recognise it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """One file of a dataset.

    Parameters
    ----------
    filename : str
        Its name on disk (and, appended to a mirror, in the URL).
    split : {"train", "test", "all"}
        Which ``load`` split needs it.
    sha256, md5 : str or None
        Of the file as published.  At least one; SHA-256 is checked when known,
        otherwise MD5.
    size : int or None
        In bytes, as published.
    raw_sha256 : str or None
        SHA-256 of the decompressed content of a ``.gz`` (accepts re-compressed copies).
    urls : tuple of str
        Full URLs tried after ``mirror + filename`` for each mirror of the source.
    """

    filename: str
    split: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    raw_sha256: str | None = None
    urls: tuple = ()

    def __post_init__(self):
        check_choice("split", self.split, ("train", "test", "all"))
        if not (self.sha256 or self.md5):
            raise ValueError(f"Resource {self.filename}: give a sha256 or an md5 (a file must be checkable)")
        for name, n in (("sha256", 64), ("md5", 32), ("raw_sha256", 64)):
            value = getattr(self, name)
            if value is not None and not re.fullmatch(f"[0-9a-f]{{{n}}}", value):
                raise ValueError(f"Resource {self.filename}: {name} must be {n} lowercase hex digits, got {value!r}")

    def checksum_text(self) -> str:
        if self.sha256:
            text = f"sha256 {self.sha256}" + (f" (md5 {self.md5})" if self.md5 else "")
        else:
            text = f"md5 {self.md5} (no SHA-256 published; checked by MD5)"
        return text + (f", {self.size} bytes" if self.size else "")


@dataclass(frozen=True)
class Source:
    """A dataset that lives in files: what they are, where to download them, where else they may be.

    Parameters
    ----------
    name : str
        The :data:`MANIFEST` key, also the folder name under each search base.
    resources : tuple of Resource
    mirrors : tuple of str
        Base URLs, tried in order; a file's URL is ``mirror + "/" + filename``.
    system_dirs : tuple of str
        Folders searched last (e.g. where a distribution package installs the files).
    torchvision_dir : str or None
        torchvision's folder for the same files (``"MNIST/raw"``), also searched under each base.
    homepage, note : str
        Shown by ``refsnn data list`` and in the missing-files message.
    n_samples : tuple of (split, count)
        Expected samples per split, checked where no checksum can be (extracted N-MNIST trees).
    """

    name: str
    resources: tuple
    mirrors: tuple = ()
    system_dirs: tuple = ()
    torchvision_dir: str | None = None
    homepage: str = ""
    note: str = ""
    n_samples: tuple = ()

    def files(self, split: str) -> tuple:
        return tuple(r for r in self.resources if r.split in (split, "all"))


_IDX_NAMES = (("train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
              ("test", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))

#: Every dataset that is read from files.  Sources of the numbers:
#: MD5s: torchvision 0.29.1 ``datasets/mnist.py`` (MNIST, FashionMNIST, EMNIST) and tonic
#: (neuromorphs/tonic d0cb6df, ``datasets/nmnist.py``).  SHA-256 and sizes: TensorFlow Datasets
#: ``url_checksums/{mnist,fashion_mnist,emnist}.txt``.  Fashion-MNIST's SHA-256 were also
#: recomputed here: Debian's files hold the same deflate streams as upstream's under a shorter
#: gzip header; restoring the upstream header (file name, mtime 2017-08-31) gives files whose MD5
#: equals torchvision's and whose git blob ids equal those in zalandoresearch/fashion-mnist
#: ``data/fashion/``, and whose SHA-256 equal TFDS's.  ``raw_sha256`` was computed from Debian's
#: files (identical decompressed bytes).
MANIFEST: dict = {
    "fashion-mnist": Source(
        "fashion-mnist",
        resources=(
            Resource("train-images-idx3-ubyte.gz", "train", size=26421880, md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     sha256="3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                     raw_sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            Resource("train-labels-idx1-ubyte.gz", "train", size=29515, md5="25c81989df183df01b3e8a0aad5dffbe",
                     sha256="a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                     raw_sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
            Resource("t10k-images-idx3-ubyte.gz", "test", size=4422102, md5="bef4ecab320f06d8554ea6380940ec79",
                     sha256="346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                     raw_sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            Resource("t10k-labels-idx1-ubyte.gz", "test", size=5148, md5="bb300cfdad3c16e7a12a480ee83cd310",
                     sha256="67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                     raw_sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        torchvision_dir="FashionMNIST/raw",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        note="On Debian/Ubuntu: apt-get install dataset-fashion-mnist (data_scripts/install_fashion_mnist_debian.sh).",
    ),
    "mnist": Source(
        "mnist",
        resources=(
            Resource("train-images-idx3-ubyte.gz", "train", size=9912422, md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
                     sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            Resource("train-labels-idx1-ubyte.gz", "train", size=28881, md5="d53e105ee54ea40749a09fcbcd1e9432",
                     sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            Resource("t10k-images-idx3-ubyte.gz", "test", size=1648877, md5="9fb629c4189551a2d022fa330f9573f3",
                     sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            Resource("t10k-labels-idx1-ubyte.gz", "test", size=4542, md5="ec29112dd5afa0611ce80d1b7f02629c",
                     sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        ),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/",
                 "http://yann.lecun.com/exdb/mnist/"),
        torchvision_dir="MNIST/raw",
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "emnist": Source(
        "emnist",
        resources=(
            Resource("gzip.zip", "all", size=561753746, md5="58c8d27c78d21e728a6bc7b3cc06412e",
                     sha256="fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e"),
        ),
        mirrors=("https://biometrics.nist.gov/cs_links/EMNIST/",
                 "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/"),
        homepage="https://www.nist.gov/itl/products-and-services/emnist-dataset",
        note="One 562 MB archive holds every variant; load reads the variant's members from it.",
    ),
    "n-mnist": Source(
        "n-mnist",
        resources=(
            Resource("train.zip", "train", md5="20959b8e626244a1b502305a9e6e2031",
                     urls=("https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
                           "39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded",
                           "https://www.dropbox.com/sh/tg2ljlbmtzygrag/AABlMOuR15ugeOxMCX0Pvoxga/Train.zip?dl=1")),
            Resource("test.zip", "test", md5="69ca8762b2fe404d9b9bad1103e97832",
                     urls=("https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
                           "05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded",
                           "https://www.dropbox.com/sh/tg2ljlbmtzygrag/AADSKgJ2CjaBWh75HnTNZyhca/Test.zip?dl=1")),
        ),
        homepage="https://www.garrickorchard.com/datasets/n-mnist",
        n_samples=(("train", 60000), ("test", 10000)),
        note=("Only MD5s are published for these archives (tonic); they are checked by MD5. An extracted tree "
              "NAME/Train/<digit>/*.bin, NAME/Test/<digit>/*.bin is also accepted (counted, not hashed)."),
    ),
}

EMNIST_VARIANTS = {"balanced": 47, "letters": 26, "digits": 10, "byclass": 62, "bymerge": 47, "mnist": 10}
_N_CLASSES = {"digits": 10, "fashion-mnist": 10, "mnist": 10, "n-mnist": 10, "synthetic": 4,
              **{f"emnist-{v}": k for v, k in EMNIST_VARIANTS.items()}}
#: Every name ``load`` accepts (``"emnist"`` is an alias of ``"emnist-balanced"``).
NAMES = ("digits", "fashion-mnist", "mnist", "emnist", *(f"emnist-{v}" for v in EMNIST_VARIANTS), "n-mnist",
         "synthetic")
_NMNIST_FOLDERS = {"train": "Train", "test": "Test"}


def _canonical(name: str) -> str:
    check_choice("name", name, NAMES)
    return "emnist-balanced" if name == "emnist" else name


def _source_key(name: str) -> str:
    """The MANIFEST key holding the files of dataset ``name`` (all EMNIST variants share one archive)."""
    return "emnist" if name.startswith("emnist") else name


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are in none of the searched folders (the message says what to do)."""


class ChecksumError(ValueError):
    """A file is present but is not the published one."""


class DownloadError(OSError):
    """No mirror delivered a file with the right checksum (the message lists each attempt)."""


# --------------------------------------------------------------------------------------------
# Where files live
# --------------------------------------------------------------------------------------------


def _make_folder(path: Path, what: str) -> None:
    """Create ``path`` (and its parents) or raise a ValueError that names the argument it came from."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{what}: cannot create the download folder {path} ({exc.strerror or exc}); "
                         f"choose a writable folder (--root DIR or $REFSNN_DATA)") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"{what}: the download folder {path} is not writable; choose a writable folder "
                         f"(--root DIR or $REFSNN_DATA)")


def search_dirs(name: str, root=None) -> list:
    """Folders searched for the files of ``name``, in order (see the module docstring)."""
    key = _source_key(_canonical(name))
    source = MANIFEST.get(key)
    bases = []
    if root is not None:
        bases.append(("root", Path(root).expanduser()))
    env = env_path("REFSNN_DATA")
    if env is not None:
        bases.append(("REFSNN_DATA", env))
    bases.append(("cache", user_cache_dir()))
    dirs = []
    for label, base in bases:
        dirs.append(base / key)
        if label == "root":
            dirs.append(base)
        if source is not None and source.torchvision_dir:
            dirs.append(base / source.torchvision_dir)
    if source is not None:
        dirs += [Path(d) for d in source.system_dirs]
    out = []
    for d in dirs:  # drop repeats (e.g. root == $REFSNN_DATA), keep the first
        if d not in out:
            out.append(d)
    return out


def _offline(offline) -> bool:
    if offline is not None:
        return bool(offline)
    return os.environ.get("REFSNN_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------

_CHUNK = 1 << 20
_VERIFIED: dict = {}  # (path, size, mtime_ns, expected checksums) -> how it was verified: hash a file once


def _hash_stream(f, algo: str) -> str:
    h = hashlib.new(algo)
    for chunk in iter(lambda: f.read(_CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


def _hash_file(path: Path, algo: str) -> str:
    with open(path, "rb") as f:
        return _hash_stream(f, algo)


def _file_key(path: Path, res: Resource) -> tuple:
    st = Path(path).stat()
    return str(Path(path).resolve()), st.st_size, st.st_mtime_ns, res.sha256, res.md5, res.raw_sha256


def _check_file(path: Path, res: Resource) -> tuple:
    """``(ok, how)``: does ``path`` hold the published ``res``?  ``how`` says which checksum decided."""
    key = _file_key(path, res)
    if key in _VERIFIED:
        return True, _VERIFIED[key]
    if res.sha256:
        got = _hash_file(path, "sha256")
        ok, how = got == res.sha256, f"sha256 {got}"
    else:
        got = _hash_file(path, "md5")
        ok, how = got == res.md5, f"md5 {got} (no SHA-256 known)"
    if not ok and res.raw_sha256:
        try:
            with gzip.open(path, "rb") as f:
                raw = _hash_stream(f, "sha256")
        except (OSError, EOFError, zlib.error):
            raw = None
        if raw == res.raw_sha256:
            ok, how = True, f"sha256 of the decompressed content {raw} (a re-compressed copy)"
    if ok:
        _VERIFIED[key] = how
    return ok, how


def _require_valid(path: Path, res: Resource, name: str) -> None:
    ok, how = _check_file(path, res)
    if not ok:
        raise ChecksumError(f"{path}: not the published {name} file {res.filename}: expected {res.checksum_text()}, "
                            f"got {how}. Delete it and run `refsnn data fetch {name}` "
                            f"(or put the right file there).")


# --------------------------------------------------------------------------------------------
# Finding a dataset, or saying exactly what is missing
# --------------------------------------------------------------------------------------------


def _missing_message(name: str, split, root, *, offline: bool) -> str:
    """The one actionable message for missing files (``split`` None: every file of the dataset)."""
    key = _source_key(name)
    source = MANIFEST[key]
    files = source.files(split) if split is not None else source.resources
    what = f"{name} ({split} split)" if split is not None else name
    lines = [f"{what}: its files are in none of the folders searched."]
    lines.append("Files expected:")
    lines += [f"  {r.filename}  {r.checksum_text()}" for r in files]
    lines.append("Folders searched, in order:")
    lines += [f"  {d}" for d in search_dirs(name, root)]
    target = data_home(root) / key
    lines.append(f"Put the files in {target}/ (or pass root=..., or set REFSNN_DATA), or fetch them on a "
                 f"connected machine with:")
    lines.append(f"  refsnn data fetch {name}" + (f" --root {root}" if root is not None else "")
                 + f"     (Python: refsnn.harness.datasets.load({name!r}, download=True))")
    urls = [u for r in files for u in _urls(source, r, None)]
    if urls:
        lines.append("Download addresses (tried in order for each file):")
        lines += [f"  {u}" for u in urls]
    if source.note:
        lines.append(source.note)
    if offline:
        lines.append("Offline mode is on (offline=True or REFSNN_OFFLINE=1): nothing was downloaded.")
    return "\n".join(lines)


def _nmnist_tree(d: Path, split: str):
    """``(d/Train or d/train, number of .bin files in its digit folders)``, or ``(None, 0)``."""
    for folder in (_NMNIST_FOLDERS[split], split):
        tree = d / folder
        if tree.is_dir() and any((tree / str(c)).is_dir() for c in range(10)):
            return tree, sum(1 for c in range(10) for _ in (tree / str(c)).glob("*.bin"))
    return None, 0


def _locate(name: str, split: str, root) -> dict | None:
    """Paths of ``split``'s files (first folder holding each), ``{"tree": Path}``, or None; nothing hashed."""
    key = _source_key(name)
    source = MANIFEST[key]
    dirs = search_dirs(name, root)
    found = {}
    for res in source.files(split):
        path = next((d / res.filename for d in dirs if (d / res.filename).is_file()), None)
        if path is not None:
            found[res.filename] = path
    if len(found) == len(source.files(split)):
        return found
    if key == "n-mnist":
        for d in dirs:
            tree, count = _nmnist_tree(d, split)
            if tree is not None and count == dict(source.n_samples)[split]:
                return {"tree": tree}
    return None


def find(name: str, split: str = "train", *, root=None) -> dict:
    """Where the files of ``name``'s ``split`` are: ``{filename: Path}``, every file verified.

    For an extracted N-MNIST tree the dict is ``{"tree": Path}``.  Raises
    :class:`DatasetNotFoundError` when a file is missing and :class:`ChecksumError`
    when a file found is not the published one.
    """
    name = _canonical(name)
    check_choice("split", split, ("train", "test"))
    key = _source_key(name)
    if key not in MANIFEST:
        raise ValueError(f"name: {name!r} needs no files (it is bundled or generated)")
    found = _locate(name, split, root)
    if found is None:
        raise DatasetNotFoundError(_missing_message(name, split, root, offline=False))
    resources = {r.filename: r for r in MANIFEST[key].resources}
    for filename, path in found.items():
        if filename in resources:
            _require_valid(path, resources[filename], name)
    return found


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------


def _urls(source: Source, res: Resource, mirrors) -> list:
    bases = source.mirrors if mirrors is None else tuple(mirrors)
    urls = [b.rstrip("/") + "/" + res.filename for b in bases]
    if mirrors is None:
        urls += list(res.urls)
    return urls


def _user_agent() -> str:
    from refsnn import __version__

    return f"refsnn/{__version__} (Python urllib; dataset download)"


def _transfer(url: str, part: Path, res: Resource, *, progress: bool, timeout: float) -> None:
    """Append ``url``'s bytes to ``part`` (resuming with HTTP Range when ``part`` exists)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _user_agent()}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # range beyond the end: the .part is already whole; let the checksum decide
            return
        raise
    with resp:
        if have and resp.status != 206:  # the server ignored the Range: start again
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else res.size
        bar = None
        if progress:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                           desc=res.filename, file=sys.stderr, leave=False)
            except ImportError:  # pragma: no cover
                bar = None
        written = have
        try:
            with open(part, "ab" if have else "wb") as f:
                while True:
                    chunk = resp.read(1 << 16)
                    if not chunk:
                        break
                    f.write(chunk)
                    written += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        finally:
            if bar is not None:
                bar.close()
    if length is not None and written != total:
        raise OSError(f"incomplete transfer: the connection closed after {written} of {total} bytes")


def download(res: Resource, urls, directory, *, progress: bool = True, offline=None, timeout: float = 30.0) -> Path:
    """Fetch one file into ``directory``: first URL that delivers it with the right checksum wins.

    Bytes go to ``directory/FILE.part``; the file appears under its name (atomic
    ``os.replace``) only once whole and verified.  A corrupt download is deleted;
    an interrupted one keeps its ``.part`` for the next call to resume.

    Raises :class:`DatasetNotFoundError` in offline mode (before any socket is
    opened) and :class:`DownloadError` when every URL failed.
    """
    directory = Path(directory)
    if _offline(offline):
        raise DatasetNotFoundError(f"{res.filename}: offline mode is on (offline=True or REFSNN_OFFLINE=1); "
                                   f"refusing to download. Expected {res.checksum_text()}; put the file in "
                                   f"{directory}/")
    urls = list(urls)
    if not urls:
        raise DownloadError(f"{res.filename}: no download address known")
    _make_folder(directory, "directory")
    dest, part = directory / res.filename, directory / (res.filename + ".part")
    errors = []
    for url in urls:
        try:
            _transfer(url, part, res, progress=progress, timeout=timeout)
        except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError, timeouts, resets, short reads
            errors.append(f"{url}: {type(exc).__name__}: {exc}")
            continue
        ok, how = _check_file(part, res)
        if not ok:
            part.unlink()
            errors.append(f"{url}: checksum mismatch, expected {res.checksum_text()}, got {how}; deleted")
            continue
        _VERIFIED.pop(_file_key(part, res), None)
        os.replace(part, dest)
        _VERIFIED[_file_key(dest, res)] = how  # same bytes, now under their final name
        return dest
    kept = f" The partial file {part} is kept; the next fetch resumes it." if part.exists() else ""
    raise DownloadError(f"{res.filename}: every address failed:\n  " + "\n  ".join(errors) + kept)


def fetch(name: str, *, root=None, mirrors=None, offline=None, progress: bool = True, force: bool = False,
          log=None) -> Path:
    """Download and verify every file of ``name`` (both splits) into ``data_home(root)/NAME``.

    A file already present and verified anywhere in :func:`search_dirs` is not
    downloaded again (unless ``force``).  ``mirrors`` replaces the manifest's
    base URLs (each is joined with the file name).  ``log`` receives one line
    per file.  This is ``refsnn data fetch NAME``.  Returns the target folder.
    """
    name = _canonical(name)
    key = _source_key(name)
    if key not in MANIFEST:
        raise ValueError(f"name: {name!r} needs no download (it is bundled or generated)")
    source = MANIFEST[key]
    log = log or (lambda *_: None)
    target = data_home(root) / key
    if _offline(offline):  # say everything that is missing before refusing (no socket is opened)
        dirs = search_dirs(name, root)
        if force or any(not any((d / r.filename).is_file() for d in dirs) for r in source.resources):
            raise DatasetNotFoundError(_missing_message(name, None, root, offline=True))
    for res in source.resources:
        if not force:
            present = [d / res.filename for d in search_dirs(name, root) if (d / res.filename).is_file()]
            if present:
                _require_valid(present[0], res, name)
                log(f"{res.filename}: present and verified at {present[0]}")
                continue
        _make_folder(target, "root" if root is not None else "data_home()")     # an error that names the argument
        path = download(res, _urls(source, res, mirrors), target, progress=progress, offline=offline)
        log(f"{res.filename}: downloaded and verified into {path}")
    return target


def checksums(name: str, *, root=None) -> list:
    """Check every file of ``name`` against the manifest: a list of ``(filename, path or None, status, detail)``.

    ``status`` is ``"ok"``, ``"missing"``, ``"mismatch"`` or ``"unverified"``
    (an extracted N-MNIST tree, which has no published checksum).  The hash is
    recomputed (nothing remembered from earlier checks).  This is ``refsnn data checksums NAME``.
    """
    name = _canonical(name)
    key = _source_key(name)
    if key not in MANIFEST:
        return [(name, None, "ok", "bundled or generated: nothing to verify")]
    rows = []
    dirs = search_dirs(name, root)
    for res in MANIFEST[key].resources:
        path = next((d / res.filename for d in dirs if (d / res.filename).is_file()), None)
        if path is None:
            if key == "n-mnist":
                trees = [(d, *_nmnist_tree(d, res.split)) for d in dirs]
                tree = next(((t, c) for _, t, c in trees if t is not None), None)
                if tree is not None:
                    expected = dict(MANIFEST[key].n_samples)[res.split]
                    rows.append((res.filename, tree[0], "unverified" if tree[1] == expected else "mismatch",
                                 f"extracted tree with {tree[1]} .bin files (expected {expected}); "
                                 f"no published checksum for extracted files"))
                    continue
            rows.append((res.filename, None, "missing", f"expected {res.checksum_text()}"))
            continue
        _VERIFIED.pop(_file_key(path, res), None)
        ok, how = _check_file(path, res)
        rows.append((res.filename, path, "ok" if ok else "mismatch",
                     how if ok else f"expected {res.checksum_text()}, got {how}"))
    return rows


def describe(root=None) -> list:
    """One dict per dataset for ``refsnn data list``: name, classes, where (or "missing"), homepage; nothing hashed."""
    rows = []
    for name in NAMES:
        if name == "emnist":
            continue
        key = _source_key(name)
        if key not in MANIFEST:
            where = "bundled (scikit-learn)" if name == "digits" else "generated (no files)"
            rows.append(dict(name=name, classes=_N_CLASSES[name], where=where, homepage=""))
            continue
        found = _locate(name, "train", root)
        where = "missing" if found is None else str(next(iter(found.values())).parent) + " (not yet verified)"
        rows.append(dict(name=name, classes=_N_CLASSES[name], where=where, homepage=MANIFEST[key].homepage))
    return rows


# --------------------------------------------------------------------------------------------
# IDX files (LeCun's MNIST format)
# --------------------------------------------------------------------------------------------

#: IDX type code -> big-endian NumPy dtype.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(source) -> np.ndarray:
    """Read an IDX array from a path or a binary file object (gzip-compressed or raw, detected by content).

    Layout: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions ``ndim``,
    ``ndim`` big-endian uint32 sizes, then the data, big-endian, row-major.

    Returns an array of that shape and type in native byte order.  A truncated,
    over-long or malformed file raises ``ValueError`` naming the file and the fault.
    """
    if hasattr(source, "read"):
        label = getattr(source, "name", "<stream>")
        buf = source.read()
    else:
        label = str(source)
        with open(source, "rb") as f:
            buf = f.read()
    if buf[:2] == b"\x1f\x8b":
        try:
            buf = gzip.decompress(buf)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{label}: corrupt or truncated gzip data ({exc})") from None
    if len(buf) < 4:
        raise ValueError(f"{label}: not an IDX file: {len(buf)} bytes, shorter than the 4-byte magic number")
    if buf[0] != 0 or buf[1] != 0 or buf[2] not in IDX_TYPES:
        raise ValueError(f"{label}: not an IDX file: magic number {buf[:4].hex()} (expected 00 00, a type code "
                         f"among {', '.join(f'{t:02x}' for t in IDX_TYPES)}, then ndim)")
    ndim = buf[3]
    if ndim == 0:
        raise ValueError(f"{label}: IDX header says 0 dimensions")
    offset = 4 + 4 * ndim
    if len(buf) < offset:
        raise ValueError(f"{label}: truncated IDX header: {ndim} dimensions need {offset} header bytes, "
                         f"file has {len(buf)}")
    dims = [int.from_bytes(buf[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(IDX_TYPES[buf[2]])
    expected = dtype.itemsize
    for d in dims:
        expected *= d
    if len(buf) - offset != expected:
        fault = "truncated" if len(buf) - offset < expected else "has trailing bytes"
        raise ValueError(f"{label}: {fault}: header says shape {tuple(dims)} of {dtype.itemsize}-byte values = "
                         f"{expected} data bytes, file has {len(buf) - offset}")
    return np.frombuffer(buf, dtype=dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path, array) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``); inverse of :func:`read_idx`."""
    arr = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_TYPES.items()}
    native = arr.dtype.newbyteorder("=")
    if native not in codes:
        raise TypeError(f"array: IDX stores uint8, int8, int16, int32, float32 or float64, got {arr.dtype}")
    if not 1 <= arr.ndim <= 255:
        raise ValueError(f"array: IDX needs 1..255 dimensions, got {arr.ndim}")
    if any(d >= 2**32 for d in arr.shape):
        raise ValueError(f"array: every dimension must be < 2**32, got shape {arr.shape}")
    header = bytes([0, 0, codes[native], arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + np.ascontiguousarray(arr, dtype=IDX_TYPES[codes[native]]).tobytes()
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(data)
    return path


# --------------------------------------------------------------------------------------------
# N-MNIST event files
# --------------------------------------------------------------------------------------------

#: One event: pixel ``x``, ``y`` (uint8), time ``t`` (int64, microseconds), polarity ``p`` (uint8, 1 = ON).
EVENT_DTYPE = np.dtype([("x", np.uint8), ("y", np.uint8), ("t", np.int64), ("p", np.uint8)])
_OVERFLOW_Y = 240


def read_nmnist(source, *, overflow_increment: int = 2**13) -> np.ndarray:
    """Read an N-MNIST ``.bin`` file (path, bytes or binary file object) into an :data:`EVENT_DTYPE` array.

    Each event is 5 bytes (Orchard et al. 2015, dataset description):
    byte 0 is ``x``, byte 1 is ``y``, bit 7 of byte 2 is the polarity and the
    remaining 23 bits (bytes 2-4, big-endian) the timestamp in microseconds.
    An event with ``y == 240`` is not an event but a timestamp-overflow marker:
    it adds ``overflow_increment`` to the timestamps of every later event and is
    dropped.  The increment 2**13 is the one in the dataset authors' reader
    (their MATLAB ``Read_Ndataset.m``, and tonic's ``read_mnist_file``); the
    23-bit field suggests 2**23, but N-MNIST samples last ~0.3 s < 2**23 us,
    so markers do not occur in it.  Pass another value for other recordings.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label, buf = "<bytes>", bytes(source)
    elif hasattr(source, "read"):
        label, buf = getattr(source, "name", "<stream>"), source.read()
    else:
        label = str(source)
        with open(source, "rb") as f:
            buf = f.read()
    overflow_increment = check_int("overflow_increment", overflow_increment, minimum=0)
    if len(buf) % 5:
        raise ValueError(f"{label}: {len(buf)} bytes is not a whole number of 5-byte events (truncated file?)")
    raw = np.frombuffer(buf, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
    x, y = raw[:, 0], raw[:, 1]
    p = raw[:, 2] >> 7
    t = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    marker = y == _OVERFLOW_Y
    t = t + overflow_increment * np.cumsum(marker)  # each marker shifts itself and everything after it
    keep = ~marker
    out = np.empty(int(keep.sum()), dtype=EVENT_DTYPE)
    out["x"], out["y"], out["t"], out["p"] = x[keep], y[keep], t[keep], p[keep]
    return out


def bin_events(events, T: int, *, duration=None, sensor_size=(34, 34), count: bool = False,
               dtype=np.float64) -> np.ndarray:
    """Bin one sample's events into a spike tensor of shape ``(T, 2 * H * W)``.

    Time bin ``k`` covers ``[k * duration / T, (k + 1) * duration / T)``
    microseconds; events at ``t >= duration`` are dropped.  ``duration``
    defaults to this sample's last timestamp + 1 (pass a fixed value, e.g.
    ``300_000``, so every sample gets the same time scale).  Input index of an
    event: ``p * H * W + y * W + x`` (``reshape(T, 2, H, W)`` gives OFF/ON
    frames).  Entries are 1 where at least one event fell (``count=False``,
    a spike tensor) or the number of events (``count=True``).
    """
    ev = np.asarray(events)
    if ev.dtype.names is None or not {"x", "y", "t", "p"} <= set(ev.dtype.names):
        raise TypeError(f"events: expected a structured array with fields x, y, t, p (EVENT_DTYPE), got {ev.dtype}")
    T = check_int("T", T, minimum=1)
    H, W = (check_int("sensor_size", s, minimum=1) for s in sensor_size)
    t = ev["t"].astype(np.int64)
    x, y, p = (ev[k].astype(np.int64) for k in ("x", "y", "p"))
    if ev.size and (x.max() >= W or y.max() >= H or p.max() > 1 or min(x.min(), y.min(), p.min(), t.min()) < 0):
        raise ValueError(f"events: need 0 <= x < {W}, 0 <= y < {H}, p in {{0, 1}}, t >= 0; got x in "
                         f"[{x.min()}, {x.max()}], y in [{y.min()}, {y.max()}], p in [{p.min()}, {p.max()}], "
                         f"t >= {t.min()}")
    if duration is None:
        duration = int(t.max()) + 1 if ev.size else 1
    duration = check_int("duration", duration, minimum=1)
    keep = t < duration
    k = (t[keep] * T) // duration  # exact integer binning
    idx = p[keep] * (H * W) + y[keep] * W + x[keep]
    out = np.zeros((T, 2 * H * W), dtype=np.int64)
    np.add.at(out, (k, idx), 1)
    return (out if count else np.minimum(out, 1)).astype(dtype)


def _nmnist_samples(found: dict, split: str, limit):
    """The samples of an archive or extracted tree: ``(entries, zipfile or None)``.

    ``entries`` is a list of ``(file stem, label, reader)`` sorted by file number
    then label, cut to ``limit``; ``reader()`` returns the sample's events.
    """
    pattern = re.compile(r"(?:^|/)(\d)/([^/]+)\.bin$")
    zf = None
    if "tree" in found:
        files = [f for c in range(10) for f in (found["tree"] / str(c)).glob("*.bin")]
        entries = [(f.stem, int(f.parent.name), (lambda f=f: read_nmnist(f))) for f in files]
    else:
        archive = next(iter(found.values()))
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{archive}: not a readable zip archive ({exc})") from None
        entries = [(m.group(2), int(m.group(1)), (lambda member=member: _read_member(zf, archive, member)))
                   for member in zf.namelist() for m in [pattern.search(member)] if m]
        expected = dict(MANIFEST["n-mnist"].n_samples)[split]
        if len(entries) != expected:
            zf.close()
            raise ValueError(f"{archive}: holds {len(entries)} .bin files in digit folders, expected {expected}")
    entries.sort(key=lambda e: (int(e[0]) if e[0].isdigit() else -1, e[0], e[1]))
    return (entries[:limit] if limit is not None else entries), zf


def _read_member(zf: zipfile.ZipFile, archive: Path, member: str) -> np.ndarray:
    try:
        with zf.open(member) as f:
            data = f.read()  # zipfile checks the member's CRC-32 here
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ValueError(f"{archive}: member {member} is corrupt ({exc})") from None
    try:
        return read_nmnist(data)
    except ValueError as exc:
        raise ValueError(f"{archive}: member {member}: {exc}") from None


# --------------------------------------------------------------------------------------------
# A synthetic spike-pattern set
# --------------------------------------------------------------------------------------------


def synthetic_spikes(n: int, *, T: int = 20, n_in: int = 32, n_classes: int = 4, density: float = 0.2,
                     flip: float = 0.05, seed: int = 0, split: str = "train") -> tuple:
    """Noisy copies of class spike patterns: ``(X float64 (n, T, n_in) of 0/1, y int64 (n,))``.

    Class ``c`` has a prototype raster ``P_c`` whose entries are 1 with
    probability ``density`` (drawn from ``seed`` alone, so both splits share
    them).  Sample ``i`` has label ``y_i`` (every class ``n // n_classes`` or
    one more times, in random order) and is ``P_{y_i}`` with each entry flipped
    independently with probability ``flip`` (drawn from ``seed`` and ``split``).
    Same arguments, same arrays.  To feed an algorithm a batch, put time
    first: ``X[idx].transpose(1, 0, 2)`` is ``(T, batch, n_in)``.
    """
    n = check_int("n", n, minimum=1)
    T, n_in = check_int("T", T, minimum=1), check_int("n_in", n_in, minimum=1)
    n_classes = check_int("n_classes", n_classes, minimum=2)
    density = check_in_range("density", density, 0.0, 1.0)
    flip = check_in_range("flip", flip, 0.0, 0.5)
    seed = check_int("seed", seed, minimum=0)
    check_choice("split", split, ("train", "test"))
    prototypes = as_generator(np.random.SeedSequence([seed, 0])).random((n_classes, T, n_in)) < density
    rng = as_generator(np.random.SeedSequence([seed, 1, 0 if split == "train" else 1]))
    y = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
    noise = rng.random((n, T, n_in)) < flip
    return (prototypes[y] ^ noise).astype(np.float64), y


_SYNTHETIC_SIZES = {"train": 240, "test": 120}

# --------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------


def n_classes(name: str) -> int:
    """Number of classes of dataset ``name``."""
    return _N_CLASSES[_canonical(name)]


def _load_digits(split):
    from sklearn.datasets import load_digits

    d = load_digits()
    X = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    y = d.target.astype(np.int64)
    test = (np.arange(len(y)) % 5) == 4
    keep = test if split == "test" else ~test
    return X[keep], y[keep]


def _checked(X, y, label: str, n_cls: int):
    """Images uint8 (N, H, W) and N labels in [0, n_cls), or a ValueError naming ``label``."""
    if X.dtype != np.uint8 or X.ndim != 3:
        raise ValueError(f"{label}: images must be uint8 of shape (N, H, W), got {X.dtype} {X.shape}")
    y = np.asarray(y).astype(np.int64)
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"{label}: {len(X)} images but labels of shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= n_cls):
        raise ValueError(f"{label}: labels must lie in [0, {n_cls - 1}], got [{y.min()}, {y.max()}]")
    return X, y


def _load_idx(name, split, found):
    _, images, labels = next(t for t in _IDX_NAMES if t[0] == split)
    return _checked(read_idx(found[images]), read_idx(found[labels]), f"{name} ({found[images].parent})",
                    _N_CLASSES[name])


def _load_emnist(name, split, found):
    variant = name.split("-", 1)[1]
    archive = found["gzip.zip"]
    prefix = f"gzip/emnist-{variant}-{split}"
    try:
        with zipfile.ZipFile(archive) as zf:
            with zf.open(f"{prefix}-images-idx3-ubyte.gz") as fi, zf.open(f"{prefix}-labels-idx1-ubyte.gz") as fl:
                X, y = read_idx(fi), read_idx(fl)
    except KeyError as exc:
        raise ValueError(f"{archive}: no member {exc} (is this NIST's EMNIST gzip.zip?)") from None
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{archive}: not a readable zip archive ({exc})") from None
    if variant == "letters":
        y = y.astype(np.int64) - 1  # the files number the letters 1..26
    X, y = _checked(X, y, f"{archive} ({variant}, {split})", _N_CLASSES[name])
    return np.ascontiguousarray(X.transpose(0, 2, 1)), y  # stored transposed: make them upright


def _load_nmnist(split, found, limit):
    entries, zf = _nmnist_samples(found, split, limit)
    try:
        X = np.empty(len(entries), dtype=object)
        for i, (_, _, read) in enumerate(entries):
            X[i] = read()
    finally:
        if zf is not None:
            zf.close()
    return X, np.array([c for _, c, _ in entries], dtype=np.int64)


def load(name: str, split: str = "train", *, root=None, download: bool = False, offline=None, limit=None,
         mirrors=None, progress: bool = True):
    """Load one split of a dataset as plain arrays ``(X, y)``.

    Parameters
    ----------
    name : str
        One of :data:`NAMES` (see the module docstring for what each returns).
    split : {"train", "test"}
    root : path, optional
        Searched first (``root/NAME/``, then ``root/``); downloads go there.
    download : bool
        Fetch missing files (all of the dataset's files, verified) into
        :func:`data_home`.  Default False: a missing dataset raises
        :class:`DatasetNotFoundError` saying what to do.
    offline : bool, optional
        Never open a socket.  None (default) reads ``REFSNN_OFFLINE`` now.
    limit : int, optional
        Keep only the first ``limit`` samples (N-MNIST reads only those files).
    mirrors : list of str, optional
        Base URLs to download from instead of the manifest's.
    progress : bool
        Show a progress bar while downloading.

    Returns
    -------
    X : ndarray
        uint8 ``(N, H, W)`` images, float64 ``(N, T, n_in)`` 0/1 spikes
        (``"synthetic"``), or an object array ``(N,)`` of :data:`EVENT_DTYPE`
        arrays (``"n-mnist"``).
    y : ndarray of int64, shape (N,)
        Labels in ``[0, n_classes(name))``.
    """
    name = _canonical(name)
    check_choice("split", split, ("train", "test"))
    if limit is not None:
        limit = check_int("limit", limit, minimum=1)
    if name == "digits":
        X, y = _load_digits(split)
    elif name == "synthetic":
        X, y = synthetic_spikes(_SYNTHETIC_SIZES[split], seed=0, split=split)
    else:
        off = _offline(offline)
        try:
            found = find(name, split, root=root)
        except DatasetNotFoundError:
            if not download or off:
                raise DatasetNotFoundError(_missing_message(name, split, root, offline=off)) from None
            fetch(name, root=root, mirrors=mirrors, offline=off, progress=progress)
            found = find(name, split, root=root)
        if name == "n-mnist":
            return _load_nmnist(split, found, limit)
        X, y = _load_emnist(name, split, found) if name.startswith("emnist") else _load_idx(name, split, found)
    if limit is not None:
        X, y = X[:limit], y[:limit]
    return X, y


def verify(*args, **kwargs):
    """The earlier name of :func:`checksums` ('verify' names checking another implementation's gradient); it still works and warns."""
    import warnings

    warnings.warn("datasets.verify is now datasets.checksums", DeprecationWarning, stacklevel=2)
    return checksums(*args, **kwargs)
