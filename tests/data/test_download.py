"""Tests for jaxdl.data.download against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import socket
import stat
import struct
from pathlib import Path

import numpy as np
import pytest

from jaxdl.data import download, idx
from jaxdl.errors import DataError
from tests.helpers import Server

TIMEOUT = 5.0


def idx_gz(array: np.ndarray) -> bytes:
    """A gzip-compressed uint8 IDX file holding ``array``."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return gzip.compress(header + array.tobytes(), mtime=0)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


GOOD = idx_gz(np.arange(3 * 28 * 28, dtype=np.uint64).reshape(3, 28, 28) % 251)
OTHER = idx_gz(np.zeros((2, 28, 28)))


@pytest.fixture(scope="module")
def _shared_server():
    # One server per module: shutting one down waits out serve_forever's poll interval.
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def server(_shared_server):
    _shared_server.routes.clear()
    _shared_server.hits.clear()
    return _shared_server


@pytest.fixture
def dead_url():
    """A URL on a port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/f.gz"


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- default_data_dir and sha256_file ---------------------------------------------------


def test_default_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXDL_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert download.default_data_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert download.default_data_dir() == tmp_path / "env"
    monkeypatch.delenv("JAXDL_DATA_DIR")
    assert download.default_data_dir() == tmp_path / "xdg" / "jaxdl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert download.default_data_dir() == tmp_path / "home" / ".cache" / "jaxdl"


def test_default_data_dir_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert download.default_data_dir("~/d") == tmp_path / "d"
    monkeypatch.setenv("JAXDL_DATA_DIR", "~/e")
    assert download.default_data_dir() == tmp_path / "e"
    assert download.default_data_dir("") == tmp_path / "e"


def test_sha256_file_spans_blocks(tmp_path):
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert download.sha256_file(path) == sha(data)


# --- fetch --------------------------------------------------------------------------------


def test_good_file_fetched_once(server, tmp_path):
    url = server.add("/m/f.gz", GOOD)
    data_dir = tmp_path / "new" / "dir"  # created on demand
    path = download.fetch("f.gz", sha(GOOD), data_dir, [url], timeout=TIMEOUT)
    assert path == data_dir / "f.gz"
    assert path.read_bytes() == GOOD
    assert listing(data_dir) == ["f.gz"]  # no temporary or probe files left
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert server.hits["/m/f.gz"] == 1
    again = download.fetch("f.gz", sha(GOOD), data_dir, [url], timeout=TIMEOUT)
    assert again == path
    assert server.hits["/m/f.gz"] == 1  # verified copy reused without a request


def test_uppercase_digest_accepted(server, tmp_path):
    url = server.add("/f.gz", GOOD)
    path = download.fetch("f.gz", sha(GOOD).upper(), tmp_path, [url], timeout=TIMEOUT)
    assert path.read_bytes() == GOOD


def test_wrong_checksum(server, tmp_path):
    url = server.add("/f.gz", OTHER)
    with pytest.raises(DataError) as info:
        download.fetch("f.gz", sha(GOOD), tmp_path, [url], timeout=TIMEOUT)
    msg = str(info.value)
    assert "f.gz" in msg and str(tmp_path) in msg and url in msg
    assert "checksum mismatch" in msg and sha(GOOD) in msg and sha(OTHER) in msg
    assert "JAXDL_DATA_DIR" in msg and "data.dir" in msg
    assert listing(tmp_path) == []


def test_truncated_download(server, tmp_path):
    url = server.add("/f.gz", GOOD[:100], mode="truncate")
    with pytest.raises(DataError, match="truncated download") as info:
        download.fetch("f.gz", sha(GOOD), tmp_path, [url], timeout=TIMEOUT)
    assert url in str(info.value)
    assert listing(tmp_path) == []


def test_truncated_then_second_mirror(server, tmp_path):
    bad = server.add("/a/f.gz", GOOD[:100], mode="truncate")
    good = server.add("/b/f.gz", GOOD)
    path = download.fetch("f.gz", sha(GOOD), tmp_path, [bad, good], timeout=TIMEOUT)
    assert path.read_bytes() == GOOD
    assert server.hits["/a/f.gz"] == server.hits["/b/f.gz"] == 1
    assert listing(tmp_path) == ["f.gz"]


def test_server_down(dead_url, tmp_path):
    with pytest.raises(DataError) as info:
        download.fetch("f.gz", sha(GOOD), tmp_path, [dead_url], timeout=TIMEOUT)
    msg = str(info.value)
    assert dead_url in msg and "cannot connect" in msg
    assert listing(tmp_path) == []


def test_404_then_good(server, tmp_path):
    missing = server.base + "/missing/f.gz"
    good = server.add("/ok/f.gz", GOOD)
    path = download.fetch("f.gz", sha(GOOD), tmp_path, [missing, good], timeout=TIMEOUT)
    assert path.read_bytes() == GOOD
    assert server.hits["/missing/f.gz"] == 1


def test_every_failure_listed(server, dead_url, tmp_path):
    missing = server.base + "/missing/f.gz"
    wrong = server.add("/wrong/f.gz", OTHER)
    with pytest.raises(DataError) as info:
        download.fetch("f.gz", sha(GOOD), tmp_path, [missing, dead_url, wrong], timeout=TIMEOUT)
    lines = str(info.value).splitlines()
    assert any(missing in line and "HTTP 404" in line for line in lines)
    assert any(dead_url in line and "cannot connect" in line for line in lines)
    assert any(wrong in line and "checksum mismatch" in line for line in lines)


def test_corrupt_existing_file_replaced(server, tmp_path, caplog):
    dest = tmp_path / "f.gz"
    dest.write_bytes(GOOD[:50])  # an earlier interrupted copy
    url = server.add("/f.gz", GOOD)
    with caplog.at_level(logging.WARNING, logger="jaxdl.data"):
        path = download.fetch("f.gz", sha(GOOD), tmp_path, [url], timeout=TIMEOUT)
    assert path == dest and dest.read_bytes() == GOOD
    warning = next(r for r in caplog.records if r.name == "jaxdl.data" and "corrupt" in r.message)
    assert str(dest) in warning.message
    assert sha(GOOD[:50]) in warning.message and sha(GOOD) in warning.message
    assert listing(tmp_path) == ["f.gz"]


def test_corrupt_existing_file_with_mirrors_down(dead_url, tmp_path):
    dest = tmp_path / "f.gz"
    dest.write_bytes(OTHER)
    with pytest.raises(DataError) as info:
        download.fetch("f.gz", sha(GOOD), tmp_path, [dead_url], timeout=TIMEOUT)
    msg = str(info.value)
    assert "corrupt" in msg and str(dest) in msg and sha(OTHER) in msg and dead_url in msg
    assert dest.read_bytes() == OTHER  # left where it was, nothing lost
    assert listing(tmp_path) == ["f.gz"]


def test_unknown_digest_refused(server, tmp_path):
    url = server.add("/f.gz", GOOD)
    with pytest.raises(DataError, match="no SHA-256 digest is known for f.gz"):
        download.fetch("f.gz", None, tmp_path, [url], timeout=TIMEOUT)
    assert server.hits["/f.gz"] == 0


def test_no_urls(tmp_path):
    with pytest.raises(DataError, match="no download URL"):
        download.fetch("f.gz", sha(GOOD), tmp_path, [], timeout=TIMEOUT)


def test_data_dir_cannot_be_created(server, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    url = server.add("/f.gz", GOOD)
    with pytest.raises(DataError, match="cannot create data directory") as info:
        download.fetch("f.gz", sha(GOOD), blocker / "sub", [url], timeout=TIMEOUT)
    assert "JAXDL_DATA_DIR" in str(info.value)
    assert server.hits["/f.gz"] == 0


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions"
)
def test_read_only_data_dir(server, tmp_path):
    data_dir = tmp_path / "ro"
    data_dir.mkdir()
    data_dir.chmod(0o555)
    url = server.add("/f.gz", GOOD)
    try:
        with pytest.raises(DataError, match="not writable"):
            download.fetch("f.gz", sha(GOOD), data_dir, [url], timeout=TIMEOUT)
    finally:
        data_dir.chmod(0o755)
    assert server.hits["/f.gz"] == 0


def test_unwritable_data_dir_any_user(server, tmp_path, monkeypatch):
    # Same check as above, but also meaningful when the tests run as root.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(download.tempfile, "mkstemp", refuse)
    url = server.add("/f.gz", GOOD)
    with pytest.raises(DataError, match="not writable") as info:
        download.fetch("f.gz", sha(GOOD), tmp_path, [url], timeout=TIMEOUT)
    assert str(tmp_path) in str(info.value) and "JAXDL_DATA_DIR" in str(info.value)
    assert server.hits["/f.gz"] == 0


def test_read_only_dir_with_verified_file_is_fine(tmp_path):
    (tmp_path / "f.gz").write_bytes(GOOD)
    tmp_path.chmod(0o555)
    try:
        path = download.fetch("f.gz", sha(GOOD), tmp_path, [], timeout=TIMEOUT)
    finally:
        tmp_path.chmod(0o755)
    assert path.read_bytes() == GOOD


def test_progress_goes_to_stderr(server, tmp_path, capsys):
    url = server.add("/f.gz", GOOD)
    download.fetch("f.gz", sha(GOOD), tmp_path, [url], timeout=TIMEOUT, progress=True)
    captured = capsys.readouterr()
    assert "f.gz" in captured.err and captured.out == ""


# --- load_idx_dataset through JAXDL_MIRROR -------------------------------------------------


def _serve_dataset(server: Server, prefix: str, monkeypatch, name: str) -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    files = {
        "train-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (8, 28, 28))),
        "train-labels-idx1-ubyte.gz": idx_gz(rng.integers(0, 10, 8)),
        "t10k-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (5, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": idx_gz(rng.integers(0, 10, 5)),
    }
    for filename, body in files.items():
        server.add(f"{prefix}/{filename}", body)
    digests = {filename: sha(body) for filename, body in files.items()}
    # Default mirrors that must never be used while JAXDL_MIRROR is set.
    monkeypatch.setitem(idx.DATASETS, name, {"mirrors": ("http://127.0.0.1:9/",), "files": digests})
    return files


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_load_through_mirror(server, tmp_path, monkeypatch, name):
    files = _serve_dataset(server, "/mirror", monkeypatch, name)
    monkeypatch.setenv("JAXDL_MIRROR", server.base + "/mirror")  # no trailing slash
    data = idx.load_idx_dataset(name, tmp_path, timeout=TIMEOUT)
    assert data["x_train"].shape == (8, 28, 28) and data["y_test"].shape == (5,)
    assert listing(tmp_path / name) == sorted(files)
    assert sum(server.hits.values()) == 4
    idx.load_idx_dataset(name, tmp_path, timeout=TIMEOUT)
    assert sum(server.hits.values()) == 4  # second load is offline


def test_explicit_urls_override_mirror_env(server, tmp_path, monkeypatch):
    _serve_dataset(server, "/explicit", monkeypatch, "mnist")
    monkeypatch.setenv("JAXDL_MIRROR", "http://127.0.0.1:9/")
    missing = server.base + "/nothing/"
    data = idx.load_idx_dataset(
        "mnist", tmp_path, urls=[missing, server.base + "/explicit/"], timeout=TIMEOUT
    )
    assert data["y_train"].shape == (8,)
    assert server.hits["/nothing/train-images-idx3-ubyte.gz"] == 1


def test_mirror_failure_names_file_and_dir(server, tmp_path, monkeypatch):
    _serve_dataset(server, "/mirror", monkeypatch, "mnist")
    monkeypatch.setenv("JAXDL_MIRROR", server.base + "/elsewhere/")
    with pytest.raises(DataError) as info:
        idx.load_idx_dataset("mnist", tmp_path, timeout=TIMEOUT)
    msg = str(info.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "mnist") in msg
    assert server.base + "/elsewhere/train-images-idx3-ubyte.gz" in msg and "HTTP 404" in msg
