"""Where dataset files live, their verified download, and safe extraction of archives.

The files are looked up in a local folder (``$GENLAB_DATA/<dataset>``, else
``~/.cache/genlab/data/<dataset>``). Missing files are downloaded only when allowed: each one
goes to a temporary file in that folder, its SHA-256 is compared with the digest pinned by the
dataset's module (:mod:`genlab.data.sources.idx`, :mod:`genlab.data.sources.cifar10`), and only
then is it renamed into place, so a half-written or tampered file never looks complete.
Archives are extracted only when every member is a plain file or folder inside the target.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from genlab.errors import UserError

DATA_ROOT_ENV_VAR = "GENLAB_DATA"
DOWNLOAD_TIMEOUT_SECONDS = 60.0

Fetch = Callable[[str, Path], None]
"""Downloads ``url`` into the file ``dest`` (raises OSError/URLError when it cannot)."""


@dataclass(frozen=True)
class RemoteFile:
    """One published file and the SHA-256 of its exact bytes."""

    name: str
    sha256: str


@dataclass(frozen=True)
class RemoteSource:
    """Where a dataset's files come from: mirrors tried in order, overridable by an env var."""

    dataset: str
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]
    mirror_env_var: str

    def file(self, name: str) -> RemoteFile:
        """The pinned entry for ``name``."""
        return next(f for f in self.files if f.name == name)


SOURCES: dict[str, RemoteSource] = {}
"""Every downloadable dataset by name; each dataset module adds its own entries."""


def pinned(digests: dict[str, str]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(name, sha256) for name, sha256 in digests.items())


# --------------------------------------------------------------------------- locations


def default_data_root(dataset: str) -> Path:
    """``$GENLAB_DATA/<dataset>`` if set, else ``~/.cache/genlab/data/<dataset>``."""
    base = os.environ.get(DATA_ROOT_ENV_VAR, "").strip()
    parent = Path(base).expanduser() if base else Path.home() / ".cache" / "genlab" / "data"
    return parent / dataset


def mirror_urls(source: RemoteSource) -> tuple[str, ...]:
    """Base URLs to try in order: the source's env var (comma/space separated), else defaults."""
    override = os.environ.get(source.mirror_env_var, "").replace(",", " ").split()
    bases = tuple(override) if override else source.mirrors
    return tuple(base.rstrip("/") for base in bases)


# --------------------------------------------------------------------------- download


def fetch_url(url: str, dest: Path) -> None:
    """Stream ``url`` into ``dest`` with urllib; every socket wait is bounded by the timeout."""
    request = urllib.request.Request(url, headers={"User-Agent": "genlab"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
        with open(dest, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ValueError: urllib's answer to a malformed mirror URL.
DOWNLOAD_ERRORS = (
    urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException, ValueError
)


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def _missing_files_error(
    dataset: str, missing: list[str], folder: Path, reason: str, alternative: str
) -> UserError:
    what = ", ".join(missing) + (f" {alternative}" if alternative else "")
    return UserError(
        f"{dataset}: missing {what} in {folder} ({reason}); "
        f"put the files in that folder, or set {DATA_ROOT_ENV_VAR} to use another data folder "
        f"(files are looked for in ${DATA_ROOT_ENV_VAR}/{dataset})"
    )


def _download_verified(
    source: RemoteSource, remote: RemoteFile, folder: Path, fetch: Fetch
) -> None:
    """Fetch ``remote`` from the first mirror that answers, check its SHA-256, rename into place.

    Raises UserError on a checksum mismatch (temp file deleted) and lets the last network
    error propagate when every mirror failed.
    """
    last_error: BaseException | None = None
    for base in mirror_urls(source):
        handle, tmp_name = tempfile.mkstemp(prefix=f".{remote.name}.", suffix=".part", dir=folder)
        os.close(handle)
        tmp_path = Path(tmp_name)
        try:
            fetch(f"{base}/{remote.name}", tmp_path)
        except DOWNLOAD_ERRORS as error:
            tmp_path.unlink(missing_ok=True)
            last_error = error
            continue
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        actual = sha256_of(tmp_path)
        if actual != remote.sha256:
            tmp_path.unlink(missing_ok=True)
            raise UserError(
                f"{source.dataset}: checksum mismatch for {remote.name} downloaded from {base}: "
                f"expected sha256 {remote.sha256}, got {actual}; the file was deleted"
            )
        os.replace(tmp_path, folder / remote.name)
        return
    raise last_error if last_error is not None else OSError("no mirror URL configured")


def ensure_files(
    source: RemoteSource,
    folder: Path,
    missing: list[str],
    download: bool,
    fetch: Fetch | None = None,
    alternative: str = "",
) -> None:
    """Make every file named in ``missing`` exist in ``folder``, downloading it if allowed.

    Raises one-line UserError naming the missing files (followed by ``alternative``, e.g. other
    accepted forms) and the folder when download is off or impossible.
    """
    if not missing:
        return
    if not download:
        reason = "download disabled"
        raise _missing_files_error(source.dataset, missing, folder, reason, alternative)
    fetch = fetch if fetch is not None else fetch_url
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = f"cannot create the folder: {one_line(error)}"
        raise _missing_files_error(source.dataset, missing, folder, reason, alternative) from error
    for position, name in enumerate(missing):
        try:
            _download_verified(source, source.file(name), folder, fetch)
        except DOWNLOAD_ERRORS as error:
            reason = f"download of {name} failed on every mirror, last error: {one_line(error)}"
            raise _missing_files_error(
                source.dataset, missing[position:], folder, reason, alternative
            ) from error


# --------------------------------------------------------------------------- archives


def unsafe_member_reason(member: tarfile.TarInfo) -> str | None:
    """Why a tar member may not be extracted (None when it is a plain file or folder inside)."""
    name = member.name.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (parts and ":" in parts[0]):
        return "absolute path"
    if ".." in parts:
        return "path with '..'"
    if not (member.isfile() or member.isdir()):
        return "link or special file"
    return None


def extract_safely(tar: tarfile.TarFile, archive: Path, staging: Path) -> None:
    """Extract every member of ``tar`` into ``staging`` after checking all of them.

    Refuses (UserError naming the archive and member) absolute paths, ``..``, symbolic and hard
    links and special files, before anything is written.
    """
    members = tar.getmembers()
    for member in members:
        reason = unsafe_member_reason(member)
        if reason is not None:
            raise UserError(f"{archive}: refusing to extract member {member.name!r} ({reason})")
    if hasattr(tarfile, "data_filter"):
        tar.extractall(staging, members=members, filter="data")
    else:  # Python without extraction filters; members were validated above
        tar.extractall(staging, members=members)
