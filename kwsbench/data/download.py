"""Fetch an official Speech Commands archive, verify its sha256 and extract it atomically into a folder.

Nothing is left half-done: the archive is downloaded and extracted inside a temporary folder beside the
target, and only a complete, verified extraction is renamed into place. The temporary folder is named after
its process, so the next download removes one left by a process killed outright (see ``workdirs``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from kwsbench.data.records import printable
from kwsbench.data.workdirs import make_work_folder, remove_stale_work_folders, writable_folder
from kwsbench.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://download.tensorflow.org/data/"
BASE_URL_ENV = "KWSBENCH_DOWNLOAD_URL"
MANIFEST_NAME = (
    ".kwsbench_download.json"  # written inside the extracted folder; a dotfile so no loader lists it
)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveInfo:
    """An official archive: its size in bytes and sha256 where a public source states them (else None)."""

    name: str
    size: int | None
    sha256: str | None
    source: str


# Only values read from a public source are listed; None means "not published where we could check", and
# the download then records the sha256 it computed and logs the archive as unverified.
_TFDS = "tensorflow/datasets url_checksums/speech_commands.txt"
_TORCHAUDIO = "torchaudio.datasets.speechcommands._CHECKSUMS"
ARCHIVES: dict[str, ArchiveInfo] = {
    a.name: a
    for a in (
        ArchiveInfo(
            "speech_commands_v0.01.tar.gz",
            None,
            "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
            _TORCHAUDIO,
        ),
        ArchiveInfo(
            "speech_commands_v0.02.tar.gz",
            2_428_923_189,
            "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
            f"{_TFDS}; {_TORCHAUDIO}",
        ),
        ArchiveInfo("speech_commands_test_set_v0.01.tar.gz", None, None, "none found"),
        ArchiveInfo(
            "speech_commands_test_set_v0.02.tar.gz",
            112_563_277,
            "cc2a00c1147c2254e9be3fa0f779d8c17421dc349b86366567a8edfe9acd51df",
            _TFDS,
        ),
    )
}

_DATASET_STEMS = {
    "speech_commands": "speech_commands",
    "speech_commands_test_set": "speech_commands_test_set",
}
_VERSIONS = {v: "v0.01" for v in ("v0.01", "0.01", "v1", "1")} | {
    v: "v0.02" for v in ("v0.02", "0.02", "v2", "2")
}


@dataclass(frozen=True)
class DownloadResult:
    """What ``download_archive`` did: ``fetched`` is False when ``target`` already held this archive."""

    archive: str
    url: str
    target: str
    sha256: str
    verified: bool
    size: int
    seconds: float
    fetched: bool

    def to_dict(self) -> dict:
        return asdict(self)


def archive_name(dataset: str, version: str) -> str:
    """The official archive file name for ``dataset`` (speech_commands | speech_commands_test_set) and
    ``version`` (v0.01 | v0.02, also v1 | v2)."""
    stem = _DATASET_STEMS.get(dataset)
    if stem is None:
        raise DataError(
            f"--download: no official archive for dataset {dataset!r}; use speech_commands or speech_commands_test_set"
        )
    ver = _VERSIONS.get(version.strip().lower())
    if ver is None:
        raise DataError(f"--download {version!r}: unknown Speech Commands version; use v0.01 or v0.02")
    return f"{stem}_{ver}.tar.gz"


def base_url(override: str | None = None) -> str:
    """The folder URL archives are fetched from: ``override``, else ``$KWSBENCH_DOWNLOAD_URL``, else Google's."""
    url = override or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return url if url.endswith("/") else url + "/"


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The download manifest inside ``folder`` (archive, url, sha256, verified, ...), or None."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # cut or edited by hand: the folder is then not known to be complete
        log.warning("%s: unreadable download manifest (%s)", printable(path), err)
        return None
    return manifest if isinstance(manifest, dict) else None


def download_archive(
    archive: str,
    target: str | os.PathLike,
    *,
    url_base: str | None = None,
    sha256: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> DownloadResult:
    """Download ``archive`` from ``url_base`` (see ``base_url``), check it and extract it into ``target``.

    The expected sha256 is ``sha256`` if given, else the published one in ``ARCHIVES``; a mismatch raises
    ``DataError``. With neither, the computed sha256 is recorded in the manifest and logged as unverified.
    A copy of ``archive`` already lying beside ``target`` is used instead of downloading. ``target`` must
    be missing or empty, or already hold this archive's extraction (then nothing is done).
    """
    target = Path(target).expanduser().resolve()
    info = ARCHIVES.get(archive, ArchiveInfo(archive, None, None, "not an official archive"))
    if sha256 is not None:  # a caller's checksum replaces the table entry, size included
        info = ArchiveInfo(archive, None, sha256.lower(), "caller")
    expected = info.sha256
    url = base_url(url_base) + archive

    manifest = read_manifest(target)
    if manifest is not None and manifest.get("archive") == archive:
        log.info("%s already extracted in %s (sha256 %s)", archive, printable(target), manifest.get("sha256"))
        return DownloadResult(**{**manifest, "target": str(target), "seconds": 0.0, "fetched": False})
    if target.exists() and not target.is_dir():
        raise DataError(
            f"--data-dir {printable(target)}: is a file, not a folder; pass a folder to extract {archive} into"
        )
    if target.exists() and any(target.iterdir()):
        raise DataError(
            f"{printable(target)}: already holds files not extracted from {archive}; "
            "drop --download to use them as they are, or pick an empty --data-dir"
        )

    writable_folder(
        target.parent,
        f"--data-dir {printable(target)} (its parent {printable(target.parent)})",
        "pass --download a --data-dir inside a folder you can write to",
    )
    partial = f".{target.name}.download-"
    for leftover in remove_stale_work_folders(target.parent, partial):
        log.warning("removed %s, a partial download left by an interrupted run", printable(leftover))
    local_copy = target.parent / archive
    start = time.perf_counter()
    # The temporary folder sits beside the target so the final rename stays on one filesystem (atomic).
    work = make_work_folder(target.parent, partial)
    try:
        if local_copy.is_file():
            log.info("using the local copy %s instead of downloading", local_copy)
            digest, size = _sha256_of(local_copy, progress)
            archive_path, source = local_copy, str(local_copy)
        else:
            archive_path = work / archive
            digest, size = _fetch(url, archive_path, archive, target, info.size, timeout, progress)
            source = url
        _verify(archive, source, digest, size, expected, info.size)
        extracted = work / "extracted"
        _extract(archive_path, extracted, archive)
        result = DownloadResult(
            archive=archive,
            url=source,
            target=str(target),
            sha256=digest,
            verified=expected is not None,
            size=size,
            seconds=round(time.perf_counter() - start, 3),
            fetched=True,
        )
        manifest = {k: v for k, v in result.to_dict().items() if k not in ("seconds", "fetched")}
        (extracted / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            target.rmdir()  # empty (checked above); rename cannot replace a directory
        os.rename(extracted, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not result.verified:
        log.warning(
            "%s: unverified (no published sha256); computed sha256 %s recorded in %s",
            archive,
            digest,
            MANIFEST_NAME,
        )
    log.info("%s extracted into %s in %.1f s", archive, target, result.seconds)
    return result


def fetch_official(
    dataset: str,
    version: str,
    data_dir: str | os.PathLike,
    *,
    url_base: str | None = None,
    progress: bool = True,
) -> DownloadResult:
    """Fetch the official archive of ``dataset`` at ``version`` into ``data_dir`` (``kwsbench data prepare --download``)."""
    return download_archive(archive_name(dataset, version), data_dir, url_base=url_base, progress=progress)


def _fetch(
    url: str, dest: Path, archive: str, target: Path, known_size: int | None, timeout: float, progress: bool
) -> tuple[str, int]:
    """Stream ``url`` into ``dest`` while hashing it; returns (sha256, bytes). Any failure is one DataError."""
    place = (
        f"download {archive} elsewhere and place it in {target.parent} (it is then verified and extracted), "
        f"or extract it into {target} yourself and drop --download"
    )
    hasher = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            header = resp.headers.get("Content-Length")
            total = int(header) if header is not None else known_size
            with (
                open(dest, "wb") as out,
                tqdm(
                    total=total, unit="B", unit_scale=True, desc=archive, disable=not progress, leave=False
                ) as bar,
            ):
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        raise DataError(f"{url}: HTTP {err.code} {err.reason}; {place}") from None
    except urllib.error.URLError as err:
        raise DataError(f"{url}: cannot connect ({err.reason}); {place}") from None
    except (
        OSError,
        ValueError,
    ) as err:  # reset, timeout, IncompleteRead (an http.client ValueError subclass)
        raise DataError(
            f"{url}: transfer failed after {size} bytes ({type(err).__name__}); {place}"
        ) from None
    if header is not None and size != int(header):
        raise DataError(f"{url}: transfer cut off at {size} of {header} bytes; {place}")
    return hasher.hexdigest(), size


def _sha256_of(path: Path, progress: bool) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = path.stat().st_size
    with (
        open(path, "rb") as f,
        tqdm(total=size, unit="B", unit_scale=True, desc=path.name, disable=not progress, leave=False) as bar,
    ):
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
            bar.update(len(chunk))
    return hasher.hexdigest(), size


def _verify(
    archive: str, source: str, digest: str, size: int, expected: str | None, known_size: int | None
) -> None:
    """The sha256 decides when one is expected; the size is the only check left when none is."""
    if expected is None and known_size is not None and size != known_size:
        raise DataError(
            f"{source}: {size} bytes, the official {archive} has {known_size}; delete it and download again"
        )
    if expected is not None and digest != expected:
        raise DataError(
            f"{source}: sha256 {digest} does not match the published {expected} for {archive}; "
            "the file is corrupt or not the official archive, delete it and download again"
        )


def _extract(archive_path: Path, dest: Path, archive: str) -> None:
    """Extract a .tar.gz into ``dest``; the ``data`` filter refuses absolute paths, links out and devices."""
    try:
        with tarfile.open(archive_path, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(
            f"{archive_path}: cannot extract {archive} ({err}); delete it and download again"
        ) from None
