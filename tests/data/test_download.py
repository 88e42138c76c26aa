"""Download, verify and extract archives served over loopback HTTP: success, corruption, cut-off, no host."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kwsbench.data.download import (
    ARCHIVES,
    MANIFEST_NAME,
    archive_name,
    download_archive,
    fetch_official,
)
from kwsbench.data.workdirs import host_tag
from kwsbench.errors import DataError

ARCHIVE = "speech_commands_v0.02.tar.gz"  # the official name, so its published sha256 applies


def _make_archive(folder: Path, padding: int = 0) -> bytes:
    """A .tar.gz laid out like the official archives (word folders at the top), three short WAVs, and
    ``padding`` incompressible bytes in a README (to make a transfer that takes several reads)."""
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for word in ("yes", "no", "_background_noise_"):
            wav = folder / f"{word}.wav"
            sf.write(wav, rng.uniform(-0.5, 0.5, 1600).astype(np.float32), 16_000, subtype="PCM_16")
            tar.add(wav, arcname=f"./{word}/0a1b2c3d_nohash_0.wav")
        readme = folder / "README.md"
        readme.write_bytes(b"test archive\n" + np.random.default_rng(1).bytes(padding))
        tar.add(readme, arcname="./README.md")
    return buf.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut: bool = False  # announce the full length, send half of it, then close
    stall: threading.Event | None = None  # announce the full length, send half, then wait for this event

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        data = self.files.get(self.path.rsplit("/", 1)[-1])
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.stall is not None:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.stall.wait(60)
        else:
            self.wfile.write(data[: len(data) // 2] if self.cut else data)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, bytes, type[_Handler]]]:
    """(base URL on 127.0.0.1, archive bytes, handler class to tweak) for one test's server."""
    src = tmp_path / "src"
    src.mkdir()
    data = _make_archive(src)
    handler = type("Handler", (_Handler,), {"files": {ARCHIVE: data}, "cut": False, "stall": None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/data", data, handler
    finally:
        if handler.stall is not None:
            handler.stall.set()
        server.shutdown()
        server.server_close()
        thread.join()


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name != "src")


def test_download_verifies_and_extracts(tmp_path: Path, served) -> None:
    url, data, _ = served
    target = tmp_path / "sc"
    digest = hashlib.sha256(data).hexdigest()
    result = download_archive(ARCHIVE, target, url_base=url, sha256=digest, progress=False)
    assert result.verified and result.fetched and result.sha256 == digest and result.size == len(data)
    names = sorted(p.relative_to(target).as_posix() for p in target.rglob("*.wav"))
    assert names == [
        "_background_noise_/0a1b2c3d_nohash_0.wav",
        "no/0a1b2c3d_nohash_0.wav",
        "yes/0a1b2c3d_nohash_0.wav",
    ]
    assert sf.info(target / "yes" / "0a1b2c3d_nohash_0.wav").frames == 1600
    assert json.loads((target / MANIFEST_NAME).read_text())["sha256"] == digest
    assert _leftovers(tmp_path) == ["sc"]  # no temporary folder left beside it
    again = download_archive(ARCHIVE, target, url_base="http://127.0.0.1:9/", progress=False)
    assert not again.fetched and again.sha256 == digest  # recognised from the manifest, no connection made


def test_unknown_checksum_is_recorded_as_unverified(tmp_path: Path, served, caplog) -> None:
    url, data, handler = served
    handler.files = {"custom.tar.gz": data}
    result = download_archive("custom.tar.gz", tmp_path / "c", url_base=url, progress=False)
    assert not result.verified
    assert (
        json.loads((tmp_path / "c" / MANIFEST_NAME).read_text())["sha256"] == hashlib.sha256(data).hexdigest()
    )
    assert "unverified" in caplog.text


def test_checksum_mismatch_leaves_nothing(tmp_path: Path, served) -> None:
    url, _, _ = served
    target = tmp_path / "sc"
    # Served bytes are not Google's archive, so the published sha256 must reject them.
    with pytest.raises(DataError, match="sha256 .* does not match the published " + ARCHIVES[ARCHIVE].sha256):
        download_archive(ARCHIVE, target, url_base=url, progress=False)
    assert _leftovers(tmp_path) == []


def test_cut_off_transfer_leaves_nothing(tmp_path: Path, served) -> None:
    url, data, handler = served
    handler.cut = True
    target = tmp_path / "sc"
    target.mkdir()  # an empty target folder must stay empty, not half-filled
    with pytest.raises(DataError, match="transfer") as err:
        download_archive(
            ARCHIVE, target, url_base=url, sha256=hashlib.sha256(data).hexdigest(), progress=False
        )
    assert "\n" not in str(err.value)
    assert _leftovers(tmp_path) == ["sc"] and list(target.iterdir()) == []


def test_unreachable_host_says_what_to_place_where(tmp_path: Path, monkeypatch) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KWSBENCH_DOWNLOAD_URL", f"http://127.0.0.1:{port}/data/")
    target = tmp_path / "sc"
    with pytest.raises(DataError) as err:
        fetch_official("speech_commands", "v2", target, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and f"127.0.0.1:{port}" in msg
    assert f"place it in {tmp_path}" in msg and ARCHIVE in msg and str(target) in msg
    assert _leftovers(tmp_path) == []


def test_local_archive_beside_target_is_used(tmp_path: Path, served) -> None:
    _, data, _ = served
    (tmp_path / "custom.tar.gz").write_bytes(data)
    result = download_archive("custom.tar.gz", tmp_path / "c", url_base="http://127.0.0.1:9/", progress=False)
    assert (
        result.url == str(tmp_path / "custom.tar.gz")
        and (tmp_path / "c" / "no" / "0a1b2c3d_nohash_0.wav").is_file()
    )


def test_target_with_foreign_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "mine.txt").write_text("x")
    with pytest.raises(DataError, match="drop --download"):
        download_archive(ARCHIVE, tmp_path / "sc", url_base="http://127.0.0.1:9/", progress=False)


@pytest.mark.parametrize(
    ("dataset", "version", "expected"),
    [
        ("speech_commands", "v0.01", "speech_commands_v0.01.tar.gz"),
        ("speech_commands", "v2", "speech_commands_v0.02.tar.gz"),
        ("speech_commands_test_set", "V0.02", "speech_commands_test_set_v0.02.tar.gz"),
    ],
)
def test_archive_name(dataset: str, version: str, expected: str) -> None:
    assert archive_name(dataset, version) == expected


@pytest.mark.parametrize(("dataset", "version"), [("fsdd", "v0.02"), ("speech_commands", "v3")])
def test_archive_name_rejects_unknown(dataset: str, version: str) -> None:
    with pytest.raises(DataError):
        archive_name(dataset, version)


_KILLED_DOWNLOAD = """
import sys
from kwsbench.data.download import download_archive
download_archive(sys.argv[1], sys.argv[2], url_base=sys.argv[3], sha256=sys.argv[4], progress=False)
"""


def test_partial_download_of_a_killed_run_is_removed_by_the_next(tmp_path: Path, served) -> None:
    """SIGKILL mid-transfer leaves the partial archive in its temporary folder; the next download (of
    anything into that target) removes it because its process is gone."""
    url, _, handler = served
    # Over 2 MiB: the download writes 1 MiB reads, so half of it is on disk when the server stalls.
    data = _make_archive(tmp_path / "src", padding=2_500_000)
    handler.files = {ARCHIVE: data}
    handler.stall = threading.Event()
    target, digest = tmp_path / "sc", hashlib.sha256(data).hexdigest()
    run = subprocess.Popen([sys.executable, "-c", _KILLED_DOWNLOAD, ARCHIVE, str(target), url, digest])
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > 0 for p in tmp_path.glob(f".sc.download-*/{ARCHIVE}")):
            assert run.poll() is None and time.monotonic() < deadline, "the download never got half-way"
            time.sleep(0.05)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(30)
    (partial,) = tmp_path.glob(".sc.download-*")
    assert partial.name.startswith(f".sc.download-{run.pid}@")  # named after the killed process
    handler.stall.set()
    handler.stall = None
    result = download_archive(ARCHIVE, target, url_base=url, sha256=digest, progress=False)
    assert result.fetched and result.size == len(data)
    assert _leftovers(tmp_path) == ["sc"]


def test_partial_download_of_a_live_run_is_kept(tmp_path: Path, served) -> None:
    """A concurrent download (its process alive) keeps its temporary folder."""
    url, data, _ = served
    live = tmp_path / f".sc.download-{os.getppid()}@{host_tag()}.-abc"
    live.mkdir()
    download_archive(
        ARCHIVE, tmp_path / "sc", url_base=url, sha256=hashlib.sha256(data).hexdigest(), progress=False
    )
    assert _leftovers(tmp_path) == [live.name, "sc"]
