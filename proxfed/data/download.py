"""Optional downloads with sha256 verification and atomic writes into a cache folder."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ._io import atomic_path, sha256_of

__all__ = ["ChecksumError", "REMOTE_FILES", "default_cache_dir", "download_file"]

#: The archives the loaders can fetch: name -> (url, sha256, file name in the cache folder).
#: The sha256 values are those of the archives as published at these addresses.
REMOTE_FILES = {
    "blogfeedback": (
        "https://archive.ics.uci.edu/static/public/304/blogfeedback.zip",
        "1ba74e5ad920f7cd037502b2968581cc695146a226a73eff52fe8ad875ed4bcf",
        "blogfeedback.zip",
    ),
    "cifar10": (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        "cifar-10-python.tar.gz",
    ),
}


class ChecksumError(ValueError):
    """A downloaded file's sha256 differs from the expected one; the file was not kept."""


def default_cache_dir() -> Path:
    """Folder for downloads: ``$PROXFED_DATA``, else ``$XDG_CACHE_HOME/proxfed``, else ``~/.cache/proxfed``."""
    if os.environ.get("PROXFED_DATA"):
        return Path(os.environ["PROXFED_DATA"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "proxfed"


def download_file(url: str, sha256: str, dest, *, timeout: float = 60.0, chunk: int = 1 << 20) -> Path:
    """Fetch ``url`` into the file ``dest`` unless a verified copy is already there.

    The body is streamed into a temporary file beside ``dest`` while its
    sha256 is computed; only when it equals ``sha256`` is the temporary file
    renamed to ``dest`` (atomic on POSIX and Windows). On a mismatch, a network
    error or an interruption the temporary file is removed and ``dest`` is not
    touched, so a cache folder never holds a partial or unverified file.
    An existing ``dest`` whose sha256 matches is returned without any network
    access; one that does not match is downloaded again.

    Parameters
    ----------
    url : str
        An ``http://`` or ``https://`` address.
    sha256 : str
        Expected hex digest (64 characters).
    dest : str or path-like
        Destination file; its folder is created if needed.
    timeout : float
        Socket timeout in seconds for connecting and for every read.
    chunk : int
        Read size in bytes.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    ChecksumError
        If the downloaded bytes do not have the expected sha256.
    OSError
        If the server cannot be reached or answers with an error
        (``urllib.error.URLError`` is a subclass), with the URL in the message.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"only http(s) URLs can be downloaded, got {url!r}")
    sha256 = str(sha256).lower()
    if len(sha256) != 64 or any(ch not in "0123456789abcdef" for ch in sha256):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    dest = Path(dest).expanduser()
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    request = urllib.request.Request(url, headers={"User-Agent": "proxfed"})
    with atomic_path(dest) as tmp:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
                while block := response.read(chunk):
                    digest.update(block)
                    out.write(block)
        except (urllib.error.URLError, OSError) as exc:
            raise OSError(f"download of {url} failed: {exc}") from exc
        got = digest.hexdigest()
        if got != sha256:
            raise ChecksumError(f"sha256 mismatch for {url}: expected {sha256}, got {got}; the file was discarded")
    return dest


def fetch(name: str, folder=None, *, url: str | None = None, sha256: str | None = None) -> Path:
    """Download the registered archive ``name`` (see :data:`REMOTE_FILES`) into ``folder``."""
    default_url, default_sha, filename = REMOTE_FILES[name]
    folder = default_cache_dir() if folder is None else Path(folder).expanduser()
    return download_file(url or default_url, sha256 or default_sha, folder / filename)
