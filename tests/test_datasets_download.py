"""Downloads against a local HTTP server (127.0.0.1 only): never the real network.

The server serves generated files.  Each route is one behaviour: a good file
(with HTTP Range support), a corrupt one, one cut off half-way, a 404.  The
manifest is pointed at the generated files with ``monkeypatch.setitem(MANIFEST, ...)``
and at the server with ``mirrors=[...]``, the documented mechanism.
"""
import http.server
import socket
import threading

import numpy as np
import pytest
from test_datasets import isolated, small_mnist, source_for, write_files  # noqa: F401 (isolated is a fixture)

from refsnn import cli
from refsnn.harness import datasets


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = 10  # a stuck client cannot hold the server

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        route = self.path.strip("/").split("/", 1)
        kind, fname = (route + [""])[:2]
        data = server.files.get(fname)
        if data is None or kind == "missing":
            self.send_error(404)
            return
        if kind == "corrupt":
            data = data[:100] + bytes(b ^ 0x55 for b in data[100:110]) + data[110:]
        start = 0
        rng = self.headers.get("Range")
        if kind in ("good", "cut") and rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if kind == "cut" and fname in server.to_cut:  # promise the whole file, send half, hang up (once)
            server.to_cut.discard(fname)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 (ephemeral port) that shuts itself down after 60 s at most."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.requests, srv.to_cut = {}, [], set()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60, srv.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield srv
    finally:
        watchdog.cancel()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _dead_address() -> str:
    """A 127.0.0.1 port nobody listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def fake_mnist(isolated, monkeypatch, server):  # noqa: F811
    arrays, files = small_mnist(11)
    server.files.update(files)
    monkeypatch.setitem(datasets.MANIFEST, "mnist", source_for("mnist", files))
    return arrays, files


def test_good_download_lands_verified_and_loads(isolated, server, fake_mnist):  # noqa: F811
    arrays, files = fake_mnist
    X, y = datasets.load("mnist", "train", download=True, mirrors=[server.base + "/good/"], progress=False)
    np.testing.assert_array_equal(X, arrays["train-images-idx3-ubyte.gz"])
    target = isolated / "xdg-cache" / "refsnn" / "mnist"  # data_home() with nothing set
    assert sorted(p.name for p in target.iterdir()) == sorted(files)  # all four, no .part left
    assert all((target / f).read_bytes() == data for f, data in files.items())
    n = len(server.requests)
    datasets.load("mnist", "test", download=True, mirrors=[server.base + "/good/"], progress=False)
    assert len(server.requests) == n  # found again: nothing downloaded twice


def test_corrupt_download_is_rejected_and_leaves_nothing(isolated, server, fake_mnist):  # noqa: F811
    with pytest.raises(datasets.DownloadError, match="checksum mismatch.*deleted"):
        datasets.fetch("mnist", root=isolated / "d", mirrors=[server.base + "/corrupt/"], progress=False)
    folder = isolated / "d" / "mnist"
    assert list(folder.iterdir()) == []
    with pytest.raises(datasets.DatasetNotFoundError):
        datasets.load("mnist", root=isolated / "d")


def test_interrupted_download_leaves_nothing_half_written_and_resumes(isolated, server, fake_mnist):  # noqa: F811
    arrays, files = fake_mnist
    first = "train-images-idx3-ubyte.gz"
    server.to_cut.add(first)
    with pytest.raises(datasets.DownloadError, match="(?i)incomplete") as info:
        datasets.fetch("mnist", root=isolated / "d", mirrors=[server.base + "/cut/"], progress=False)
    folder = isolated / "d" / "mnist"
    assert not (folder / first).exists()  # never under its real name
    part = folder / (first + ".part")
    assert part.stat().st_size == len(files[first]) // 2 and "resumes" in str(info.value)
    with pytest.raises(datasets.DatasetNotFoundError):  # a .part is never taken for data
        datasets.load("mnist", root=isolated / "d")
    server.requests.clear()
    datasets.fetch("mnist", root=isolated / "d", mirrors=[server.base + "/cut/"], progress=False)
    assert server.requests[0] == (f"/cut/{first}", f"bytes={len(files[first]) // 2}-")  # resumed, not restarted
    assert (folder / first).read_bytes() == files[first] and not part.exists()
    X, _ = datasets.load("mnist", root=isolated / "d")
    np.testing.assert_array_equal(X, arrays[first])


def test_partial_files_are_restarted_or_completed_as_the_server_allows(isolated, server, fake_mnist):  # noqa: F811
    """A server that ignores Range sends the whole file again (restart); a .part already whole gets 416."""
    arrays, files = fake_mnist
    folder = isolated / "d" / "mnist"
    folder.mkdir(parents=True)
    name = "train-images-idx3-ubyte.gz"
    (folder / (name + ".part")).write_bytes(b"\xff" * 50)  # junk: appending to it would corrupt the file
    other = "train-labels-idx1-ubyte.gz"
    (folder / (other + ".part")).write_bytes(files[other])  # already whole
    datasets.fetch("mnist", root=isolated / "d", mirrors=[server.base + "/norange/"], progress=False)
    assert (folder / name).read_bytes() == files[name]
    assert ("/norange/" + name, "bytes=50-") in server.requests
    server.requests.clear()
    (folder / other).unlink()
    (folder / (other + ".part")).write_bytes(files[other])
    datasets.fetch("mnist", root=isolated / "d", mirrors=[server.base + "/good/"], progress=False)
    assert (folder / other).read_bytes() == files[other]
    assert server.requests == [("/good/" + other, f"bytes={len(files[other])}-")]  # answered 416, kept


def test_dead_and_missing_mirrors_fall_through_to_the_next(isolated, server, fake_mnist):  # noqa: F811
    mirrors = [_dead_address() + "/", server.base + "/missing/", server.base + "/good/"]
    datasets.fetch("mnist", root=isolated / "d", mirrors=mirrors, progress=False)
    assert sorted(p.name for p in (isolated / "d" / "mnist").iterdir()) == sorted(fake_mnist[1])
    assert any(path.startswith("/missing/") for path, _ in server.requests)


def test_all_mirrors_failing_says_what_each_did(isolated, server, fake_mnist):  # noqa: F811
    dead = _dead_address()
    with pytest.raises(datasets.DownloadError) as info:
        datasets.fetch("mnist", root=isolated / "d", mirrors=[dead, server.base + "/missing/"], progress=False)
    msg = str(info.value)
    assert dead in msg and "404" in msg and "Connection refused" in msg


@pytest.fixture
def no_sockets(monkeypatch):
    """Replace socket.socket by a recorder that refuses: any attempt to open a socket is seen."""
    opened = []

    def refuse(*args, **kwargs):
        opened.append(args)
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "socket", refuse)
    return opened


def test_offline_mode_never_opens_a_socket(isolated, server, fake_mnist, no_sockets, monkeypatch):  # noqa: F811
    mirrors = [server.base + "/good/"]
    with pytest.raises(datasets.DatasetNotFoundError, match="Offline mode is on"):
        datasets.load("mnist", download=True, offline=True, mirrors=mirrors)
    with pytest.raises(datasets.DatasetNotFoundError, match="Offline mode is on") as info:
        datasets.fetch("mnist", offline=True, mirrors=mirrors)
    assert all(r.filename in str(info.value) for r in datasets.MANIFEST["mnist"].resources)
    with pytest.raises(datasets.DatasetNotFoundError, match="offline mode is on"):  # the lower level too
        datasets.download(datasets.MANIFEST["mnist"].resources[0], [mirrors[0] + "x"], isolated, offline=True)
    monkeypatch.setenv("REFSNN_OFFLINE", "1")  # set after import: read at call time
    with pytest.raises(datasets.DatasetNotFoundError, match="Offline mode is on"):
        datasets.load("mnist", download=True, mirrors=mirrors)
    assert no_sockets == []
    # the guard works: the same download with offline mode off does reach for a socket
    monkeypatch.setenv("REFSNN_OFFLINE", "0")
    with pytest.raises(AssertionError, match="a socket was opened"):
        datasets.fetch("mnist", mirrors=mirrors, progress=False)
    assert no_sockets


def test_offline_mode_still_loads_files_already_there(isolated, fake_mnist, no_sockets, monkeypatch):  # noqa: F811
    arrays, files = fake_mnist
    write_files(isolated / "d" / "mnist", files)
    monkeypatch.setenv("REFSNN_OFFLINE", "1")
    X, _ = datasets.load("mnist", "test", root=isolated / "d", download=True)
    np.testing.assert_array_equal(X, arrays["t10k-images-idx3-ubyte.gz"])
    assert no_sockets == []


def test_cli_data_fetch_verify_list_path(isolated, server, fake_mnist, monkeypatch, capsys):  # noqa: F811
    root = str(isolated / "d")
    assert cli.main(["data", "checksums", "mnist", "--root", root]) == 1
    assert "MISSING" in capsys.readouterr().out
    assert cli.main(["data", "fetch", "mnist", "--root", root, "--mirror", server.base + "/good/",
                     "--no-progress"]) == 0
    assert "downloaded and verified" in capsys.readouterr().out
    assert cli.main(["data", "checksums", "mnist", "--root", root]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok ") == 4
    assert cli.main(["data", "list", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "mnist" in out and "emnist-balanced" in out and str(isolated / "d" / "mnist") in out
    assert cli.main(["data", "path", "mnist", "--root", root]) == 0
    assert str(isolated / "d" / "mnist") in capsys.readouterr().out
    (isolated / "d" / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    assert cli.main(["data", "checksums", "mnist", "--root", root]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    monkeypatch.setenv("REFSNN_OFFLINE", "1")
    assert cli.main(["data", "fetch", "mnist", "--root", str(isolated / "e")]) == 2
    assert "Offline mode is on" in capsys.readouterr().err
