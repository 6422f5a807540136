"""Checksum-verified downloads into jaxdl's data directory.

A file is only ever returned after its SHA-256 matched the expected digest.
Downloads go to a temporary file in the destination directory and are moved
onto the final name with ``os.replace`` once verified, so a crash, a full disk
or a truncated transfer can never leave a half-written file under the real
name (``os.replace`` is atomic within one filesystem, which is why the
temporary file lives in the same directory).

Only the standard library is used so that importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from jaxdl.errors import DataError

__all__ = ["ENV_DATA_DIR", "ENV_MIRROR", "default_data_dir", "fetch", "mirror_urls",
           "sha256_file"]

ENV_DATA_DIR = "JAXDL_DATA_DIR"
ENV_MIRROR = "JAXDL_MIRROR"

logger = logging.getLogger("jaxdl.data")

_BLOCK = 1 << 20  # 1 MiB: large enough for throughput, small enough for memory.


def default_data_dir(setting: str | os.PathLike[str] | None = None) -> Path:
    """Return the directory datasets are stored in.

    Args:
      setting: an explicit directory (e.g. the config key ``data.dir``); wins
        over everything else when given and non-empty.

    Returns:
      ``setting`` if given, else ``$JAXDL_DATA_DIR``, else
      ``$XDG_CACHE_HOME/jaxdl``, else ``~/.cache/jaxdl``; with ``~`` expanded.
      The directory is not created.
    """
    if setting is not None and str(setting) != "":
        return Path(setting).expanduser()
    env = os.environ.get(ENV_DATA_DIR, "")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and Path(xdg).expanduser().is_absolute():
        return Path(xdg).expanduser() / "jaxdl"
    return Path("~/.cache/jaxdl").expanduser()


def mirror_urls(filename: str, defaults: Sequence[str],
                urls: Sequence[str] | str | None = None) -> list[str]:
    """Full URLs to try for ``filename``: under the explicit base ``urls``,
    else under ``$JAXDL_MIRROR`` alone (tests, air-gapped machines), else
    under the ``defaults``."""
    if urls is not None:
        bases = (urls,) if isinstance(urls, str) else tuple(urls)
    else:
        mirror = os.environ.get(ENV_MIRROR, "")
        bases = (mirror,) if mirror else tuple(defaults)
    return [base.rstrip("/") + "/" + filename for base in bases]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex SHA-256 digest of a file, read in 1 MiB blocks.

    Args:
      path: the file.

    Returns:
      64 lowercase hex characters.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def fetch(
    filename: str,
    sha256: str | None,
    data_dir: str | os.PathLike[str],
    urls: Sequence[str],
    *,
    timeout: float = 30.0,
    progress: bool = False,
) -> Path:
    """Return ``data_dir/filename``, downloading it if needed, verified by SHA-256.

    An existing file that verifies is returned without touching the network.
    An existing file with the wrong digest is reported (warning on the
    ``jaxdl.data`` logger) and downloaded again; if that fails it is left where
    it was, never returned.

    Args:
      filename: the file's name inside ``data_dir``.
      sha256: its expected hex SHA-256; ``None`` means no digest is known, and
        the file is refused rather than used unverified.
      data_dir: the directory to keep it in; created if missing.
      urls: full URLs of the file, tried in order until one gives a copy that
        verifies.
      timeout: seconds to wait on each connection and each read.
      progress: write a progress line to stderr while downloading.

    Returns:
      The path of the verified file.

    Raises:
      DataError: no digest is known, the directory cannot be created or written,
        or no URL gave a verified copy. The message lists every URL with the
        reason it failed and says how to provide the file by hand.
    """
    data_dir = Path(data_dir).expanduser()
    dest = data_dir / filename
    if sha256 is None:
        raise DataError(
            f"no SHA-256 digest is known for {filename}, so jaxdl will not download or "
            f"use it unverified (destination {dest})."
        )
    expected = sha256.lower()

    corrupt_digest = _existing_digest(dest)
    if corrupt_digest == expected:
        return dest
    if corrupt_digest is not None:
        logger.warning(
            "%s is corrupt or truncated: sha256 %s, expected %s; downloading it again",
            dest,
            corrupt_digest,
            expected,
        )

    _ensure_writable_dir(data_dir, filename)
    if not urls:
        raise DataError(_failure_message(filename, dest, expected, [], corrupt_digest))

    failures: list[tuple[str, str]] = []
    for url in urls:
        reason = _download_verified(url, dest, expected, timeout=timeout, progress=progress)
        if reason is None:
            logger.info("downloaded %s from %s", dest, url)
            return dest
        # info, not warning: a later mirror may still succeed, and the final
        # DataError lists every failure anyway.
        logger.info("download of %s from %s failed: %s", filename, url, reason)
        failures.append((url, reason))
    raise DataError(_failure_message(filename, dest, expected, failures, corrupt_digest))


def _existing_digest(dest: Path) -> str | None:
    """Digest of the file already at ``dest``, or None when there is none."""
    if not dest.exists():
        return None
    if not dest.is_file():
        raise DataError(f"{dest} exists but is not a regular file; move it away.")
    try:
        return sha256_file(dest)
    except OSError as exc:
        raise DataError(f"cannot read existing data file {dest}: {exc}") from exc


def _ensure_writable_dir(data_dir: Path, filename: str) -> None:
    """Create ``data_dir`` and prove we can write there, or raise DataError."""
    hint = (
        f"Set {ENV_DATA_DIR} (or the config key data.dir) to a writable directory, "
        f"or place a verified copy of {filename} in {data_dir}."
    )
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create data directory {data_dir}: {exc}. {hint}") from exc
    # Probing with a real temporary file catches read-only mounts and ACLs that
    # os.access() gets wrong, and fails before any bandwidth is spent.
    try:
        fd, probe = tempfile.mkstemp(dir=data_dir, prefix=f".{filename}.", suffix=".probe")
    except OSError as exc:
        raise DataError(f"data directory {data_dir} is not writable: {exc}. {hint}") from exc
    os.close(fd)
    os.unlink(probe)


def _download_verified(
    url: str, dest: Path, expected: str, *, timeout: float, progress: bool
) -> str | None:
    """Download ``url`` onto ``dest`` if it verifies.

    Returns:
      None on success, else a one-line reason for the failure. The temporary
      file is removed on every failure path.
    """
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            reason, actual = _stream(url, out, timeout=timeout, progress=progress, name=dest.name)
            if reason is None and actual != expected:
                reason = f"checksum mismatch: expected sha256 {expected}, got {actual}"
            if reason is None:
                out.flush()
                # Persist the data before the rename, so a power loss cannot
                # leave the final name pointing at an empty file.
                os.fsync(out.fileno())
        if reason is None:
            # mkstemp creates 0600 files; a dataset cache is normally shared.
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
            return None
        return reason
    except OSError as exc:
        return f"cannot write {tmp}: {exc}"
    finally:
        tmp.unlink(missing_ok=True)


def _stream(
    url: str, out, *, timeout: float, progress: bool, name: str
) -> tuple[str | None, str | None]:
    """Copy the body at ``url`` into ``out`` while hashing it.

    Returns:
      (failure reason or None, hex SHA-256 of what was received or None).
    """
    digest = hashlib.sha256()
    received = 0
    total: int | None = None
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "jaxdl"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            while block := response.read(_BLOCK):
                out.write(block)
                digest.update(block)
                received += len(block)
                if progress:
                    _show_progress(name, received, total)
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"HTTP {exc.code} {exc.reason}", None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, str):  # e.g. "unknown url type": no connection was tried
            return f"bad URL: {exc.reason}", None
        return f"cannot connect: {exc.reason}", None
    except TimeoutError:
        return f"timed out after {timeout:g} s ({received} bytes received)", None
    except http.client.IncompleteRead as exc:
        got = received + len(exc.partial)
        return f"truncated download: connection closed after {got} bytes", None
    except (http.client.HTTPException, OSError) as exc:
        # Resets, socket errors and local write errors (disk full) alike.
        return f"transfer failed after {received} bytes: {exc!r}", None
    except ValueError as exc:  # malformed URL or unknown scheme
        return f"invalid URL: {exc}", None
    finally:
        if progress and received:
            sys.stderr.write("\n")
    # http.client does not raise when the server closes before Content-Length
    # bytes arrived, so the length has to be checked by hand.
    if total is not None and received != total:
        return f"truncated download: received {received} of {total} bytes", None
    return None, digest.hexdigest()


def _show_progress(name: str, received: int, total: int | None) -> None:
    mib = received / _BLOCK
    if total:
        sys.stderr.write(f"\rdownloading {name}: {mib:.1f}/{total / _BLOCK:.1f} MiB")
    else:
        sys.stderr.write(f"\rdownloading {name}: {mib:.1f} MiB")
    sys.stderr.flush()


def _failure_message(
    filename: str,
    dest: Path,
    expected: str,
    failures: list[tuple[str, str]],
    corrupt_digest: str | None,
) -> str:
    lines = [f"could not download {filename} into {dest.parent}:"]
    if failures:
        lines += [f"  - {url}: {reason}" for url, reason in failures]
    else:
        lines.append("  - no download URL was given")
    if corrupt_digest is not None:
        lines.append(
            f"The existing file {dest} is corrupt or truncated (sha256 {corrupt_digest}, "
            f"expected {expected}); it was left in place but will not be used."
        )
    lines.append(
        f"To fix: place a verified copy at {dest} (sha256 {expected}), or set "
        f"{ENV_DATA_DIR} (or the config key data.dir) to a data directory that holds one."
    )
    return "\n".join(lines)
