"""Downloads that either finish verified or leave nothing behind."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from genlab.errors import GenlabError


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, digest: str, timeout: float = 30.0) -> Path:
    """Fetch `url` to `dest`, verified against `digest` ("md5:..." or "sha256:...").

    The bytes go to a temporary file beside `dest` and are renamed into place only after the
    checksum matches, so an interrupted or tampered download never looks like a finished one.
    """
    algorithm, expected = digest.split(":", 1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except (OSError, ValueError) as err:  # URLError and timeouts are OSErrors
        tmp.unlink(missing_ok=True)
        raise GenlabError(f"could not download {url}: {err}") from None
    actual = file_digest(tmp, algorithm)
    if actual != expected:
        tmp.unlink(missing_ok=True)
        raise GenlabError(f"download of {url} has {algorithm} {actual}, expected {expected}; "
                          "the file was deleted (a damaged or tampered copy); try again or use "
                          "another mirror")
    os.replace(tmp, dest)
    return dest
