"""Tests for fetch_dataset with local folders, local archives and local HTTP and FTP servers."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import logging
import random
import re
import socket
import socketserver
import stat
import threading
import zipfile

import pytest

from image_retrieval.data import fetch as fetch_module
from image_retrieval.data.fetch import SOP_MD5, SOP_URL, FetchError, fetch_dataset

DATASET_FILES = {
    "images/cat/a.png": b"cat image a",
    "images/cat/b.png": b"cat image b",
    "images/dog/c.png": b"dog image c",
    "README.md": b"demo dataset\n",
}
# Random bytes do not compress, so the archive is large enough to break off a third of the way in.
LARGE_DATASET_FILES = {**DATASET_FILES, "images/dog/large.bin": random.Random(0).randbytes(1 << 16)}


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def read_tree(root) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def md5_of(payload: bytes) -> str:
    return hashlib.md5(payload).hexdigest()


class DatasetHandler(http.server.BaseHTTPRequestHandler):
    """Serve `routes`: path -> (status, body, Content-Length to announce)."""

    routes: dict[str, tuple[int, bytes, int]] = {}

    def do_GET(self):
        if self.path not in self.routes:
            self.send_error(404, "Not Found")
            return
        status, body, announced_length = self.routes[self.path]
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(announced_length))
        self.end_headers()
        # HTTP/1.0 closes the connection after this method returns, so a body shorter
        # than the announced length reaches the client as a connection closed mid-body.
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def http_server():
    """Start a ThreadingHTTPServer on 127.0.0.1 and yield (base URL, routes dict)."""
    routes: dict[str, tuple[int, bytes, int]] = {}
    handler = type("Handler", (DatasetHandler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}", routes
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_fetch_local_folder_copies_contents(tmp_path):
    source = tmp_path / "source"
    for name, content in DATASET_FILES.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(content)
    destination = tmp_path / "raw" / "demo"

    result = fetch_dataset(str(source), destination)

    assert result == destination
    assert read_tree(destination) == DATASET_FILES
    assert read_tree(source) == DATASET_FILES
    assert sorted(path.name for path in destination.parent.iterdir()) == ["demo"]


def test_fetch_local_folder_replaces_old_destination(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "new.txt").write_text("new")
    destination = tmp_path / "demo"
    destination.mkdir()
    (destination / "old.txt").write_text("old")

    fetch_dataset(str(source), destination)

    assert read_tree(destination) == {"new.txt": b"new"}


def test_fetch_rejects_destination_inside_source(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    with pytest.raises(FetchError, match="inside the source folder"):
        fetch_dataset(str(source), source / "copy")
    assert not (source / "copy").exists()


def test_fetch_rejects_md5_for_folder(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    with pytest.raises(FetchError, match="only to .zip files"):
        fetch_dataset(str(source), tmp_path / "demo", md5="0" * 32)
    assert not (tmp_path / "demo").exists()


def test_fetch_local_zip_extracts(tmp_path):
    payload = make_zip(DATASET_FILES)
    archive = tmp_path / "demo.zip"
    archive.write_bytes(payload)
    destination = tmp_path / "raw" / "demo"

    fetch_dataset(str(archive), destination, md5=md5_of(payload).upper())

    assert read_tree(destination) == DATASET_FILES
    assert archive.read_bytes() == payload


def test_fetch_local_zip_wrong_md5(tmp_path):
    payload = make_zip(DATASET_FILES)
    archive = tmp_path / "demo.zip"
    archive.write_bytes(payload)
    wrong = "0" * 32

    with pytest.raises(FetchError) as caught:
        fetch_dataset(str(archive), tmp_path / "demo", md5=wrong)

    message = str(caught.value)
    assert str(archive) in message
    assert wrong in message
    assert md5_of(payload) in message
    assert not (tmp_path / "demo").exists()
    assert archive.exists()


def test_fetch_invalid_md5_format(tmp_path):
    archive = tmp_path / "demo.zip"
    archive.write_bytes(make_zip(DATASET_FILES))
    with pytest.raises(FetchError, match="32 hexadecimal digits"):
        fetch_dataset(str(archive), tmp_path / "demo", md5="abc")


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../evil.txt", "'..' path component"),
        ("images/../../evil.txt", "'..' path component"),
        ("/etc/evil.txt", "absolute path"),
        ("C:/evil.txt", "absolute path"),
        ("..\\evil.txt", "'..' path component"),
    ],
)
def test_fetch_zip_rejects_unsafe_paths(tmp_path, member, reason):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("images/cat/a.png", b"fine")
        archive.writestr(zipfile.ZipInfo(member), b"evil")
    archive_path = tmp_path / "bad.zip"
    archive_path.write_bytes(buffer.getvalue())
    with zipfile.ZipFile(archive_path) as check:
        assert member in check.namelist(), "zipfile must store the member name unchanged"
    extract_root = tmp_path / "deep" / "raw"
    extract_root.mkdir(parents=True)

    with pytest.raises(FetchError) as caught:
        fetch_dataset(str(archive_path), extract_root / "demo")

    message = str(caught.value)
    assert repr(member) in message
    assert reason in message
    assert "nothing was extracted" in message
    assert list(extract_root.iterdir()) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.zip", "deep"]


def test_fetch_zip_rejects_symlink_member(tmp_path):
    link = zipfile.ZipInfo("images/cat/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("images/cat/a.png", b"fine")
        archive.writestr(link, "/etc/passwd")
    archive_path = tmp_path / "link.zip"
    archive_path.write_bytes(buffer.getvalue())

    with pytest.raises(FetchError) as caught:
        fetch_dataset(str(archive_path), tmp_path / "demo")

    assert "'images/cat/link.png' (symbolic link)" in str(caught.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link.zip"]


def test_fetch_zip_lists_every_unsafe_member(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("../one.txt"), b"evil")
        archive.writestr(zipfile.ZipInfo("/two.txt"), b"evil")
    archive_path = tmp_path / "bad.zip"
    archive_path.write_bytes(buffer.getvalue())

    with pytest.raises(FetchError) as caught:
        fetch_dataset(str(archive_path), tmp_path / "demo")

    assert "'../one.txt'" in str(caught.value)
    assert "'/two.txt'" in str(caught.value)


def test_fetch_corrupt_zip(tmp_path):
    archive_path = tmp_path / "corrupt.zip"
    archive_path.write_bytes(b"this is not a zip archive")
    with pytest.raises(FetchError) as caught:
        fetch_dataset(str(archive_path), tmp_path / "demo")
    assert str(archive_path) in str(caught.value)
    assert "not a valid .zip file" in str(caught.value)
    assert not (tmp_path / "demo").exists()


def test_fetch_missing_local_source(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FetchError) as caught:
        fetch_dataset(str(missing), tmp_path / "demo")
    message = str(caught.value)
    assert str(missing) in message
    assert "not found" in message
    assert "data.demo.source" in message
    assert not (tmp_path / "demo").exists()


def test_fetch_local_file_not_zip(tmp_path):
    source = tmp_path / "images.tar"
    source.write_bytes(b"tar")
    with pytest.raises(FetchError, match="neither a folder nor a .zip file"):
        fetch_dataset(str(source), tmp_path / "demo")


def test_fetch_rejects_other_url_scheme(tmp_path):
    with pytest.raises(FetchError, match="unsupported URL scheme"):
        fetch_dataset("sftp://127.0.0.1/demo.zip", tmp_path / "demo")
    assert list(tmp_path.iterdir()) == []


def test_fetch_url_downloads_and_verifies(tmp_path, http_server):
    base_url, routes = http_server
    payload = make_zip(DATASET_FILES)
    routes["/demo.zip"] = (200, payload, len(payload))
    destination = tmp_path / "raw" / "demo"

    result = fetch_dataset(f"{base_url}/demo.zip", destination, md5=md5_of(payload))

    assert result == destination
    assert read_tree(destination) == DATASET_FILES
    # The downloaded archive is deleted after extraction and no temporary file remains.
    assert sorted(path.name for path in destination.parent.iterdir()) == ["demo"]


def test_fetch_url_without_md5(tmp_path, http_server):
    base_url, routes = http_server
    payload = make_zip(DATASET_FILES)
    routes["/demo.zip"] = (200, payload, len(payload))

    fetch_dataset(f"{base_url}/demo.zip", tmp_path / "demo")

    assert read_tree(tmp_path / "demo") == DATASET_FILES


def test_fetch_url_wrong_md5(tmp_path, http_server):
    base_url, routes = http_server
    payload = make_zip(DATASET_FILES)
    routes["/demo.zip"] = (200, payload, len(payload))
    wrong = "f" * 32

    with pytest.raises(FetchError) as caught:
        fetch_dataset(f"{base_url}/demo.zip", tmp_path / "demo", md5=wrong)

    message = str(caught.value)
    assert f"{base_url}/demo.zip" in message
    assert wrong in message
    assert md5_of(payload) in message
    assert list(tmp_path.iterdir()) == []


def test_fetch_url_connection_closed_mid_body(tmp_path, http_server):
    base_url, routes = http_server
    payload = make_zip(DATASET_FILES)
    routes["/demo.zip"] = (200, payload[: len(payload) // 2], len(payload))
    url = f"{base_url}/demo.zip"

    with pytest.raises(FetchError) as caught:
        fetch_dataset(url, tmp_path / "demo")

    message = str(caught.value)
    assert url in message
    assert f"{len(payload) // 2} of {len(payload)} bytes" in message
    assert not (tmp_path / "demo").exists()
    assert not (tmp_path / "demo.zip").exists()
    assert list(tmp_path.iterdir()) == []


def test_fetch_url_failure_keeps_old_destination(tmp_path, http_server):
    base_url, routes = http_server
    payload = make_zip(DATASET_FILES)
    routes["/demo.zip"] = (200, payload[:100], len(payload))
    destination = tmp_path / "demo"
    destination.mkdir()
    (destination / "old.txt").write_text("old")

    with pytest.raises(FetchError):
        fetch_dataset(f"{base_url}/demo.zip", destination)

    assert read_tree(destination) == {"old.txt": b"old"}


def test_fetch_url_not_found(tmp_path, http_server):
    base_url, _ = http_server
    url = f"{base_url}/absent.zip"

    with pytest.raises(FetchError) as caught:
        fetch_dataset(url, tmp_path / "demo")

    message = str(caught.value)
    assert "404" in message
    assert url in message
    assert list(tmp_path.iterdir()) == []


def test_fetch_url_server_error(tmp_path, http_server):
    base_url, routes = http_server
    routes["/demo.zip"] = (500, b"", 0)
    url = f"{base_url}/demo.zip"

    with pytest.raises(FetchError) as caught:
        fetch_dataset(url, tmp_path / "demo")

    assert "500" in str(caught.value)
    assert url in str(caught.value)


def test_fetch_url_not_a_zip(tmp_path, http_server):
    base_url, routes = http_server
    body = b"<html>login page</html>"
    routes["/demo.zip"] = (200, body, len(body))

    with pytest.raises(FetchError, match="not a valid .zip file"):
        fetch_dataset(f"{base_url}/demo.zip", tmp_path / "demo")

    assert list(tmp_path.iterdir()) == []


def test_fetch_url_connection_refused(tmp_path):
    # A bound socket that never listens refuses connections to its port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/demo.zip"

        with pytest.raises(FetchError) as caught:
            fetch_dataset(url, tmp_path / "demo")

    assert url in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_fetch_local_zip_checks_disk_space(tmp_path, monkeypatch):
    payload = make_zip(DATASET_FILES)
    archive = tmp_path / "demo.zip"
    archive.write_bytes(payload)
    destination = tmp_path / "raw" / "demo"
    checked_folders = []

    def free_disk_bytes(folder):
        checked_folders.append(folder)
        return 10

    monkeypatch.setattr(fetch_module, "free_disk_bytes", free_disk_bytes)

    with pytest.raises(FetchError) as caught:
        fetch_dataset(str(archive), destination)

    message = str(caught.value)
    extracted_bytes = sum(len(content) for content in DATASET_FILES.values())
    assert f"not enough free disk space in {tmp_path / 'raw'} for extracting {archive}" in message
    assert f"needs {extracted_bytes} bytes" in message
    assert "but 10 bytes" in message
    assert checked_folders == [tmp_path / "raw"]
    assert list((tmp_path / "raw").iterdir()) == []


def test_sop_constants_are_valid():
    assert SOP_URL.startswith("ftp://")
    assert SOP_URL.endswith(".zip")
    assert fetch_module._normalize_md5(SOP_MD5) == SOP_MD5


# Resumable downloads over HTTP.

ETAG = '"v1"'


@dataclasses.dataclass
class ServedFile:
    """The file that RangeHandler serves at /demo.zip, with switches for the failure cases."""

    body: bytes
    etag: str | None = ETAG
    last_modified: str | None = None
    # Respond to a Range request with the whole file and status 200, as servers without range support do.
    ignore_range: bool = False
    # Respond to a Range request with status 206 but the whole file and a Content-Range starting at byte 0.
    misreport_range: bool = False
    # Send only this many bytes of the next body, then close the connection.
    drop_after_bytes: int | None = None
    # Path, Range, If-Range and status of each request, in order.
    requests: list[dict] = dataclasses.field(default_factory=list)


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serve `served` at /demo.zip (any query string) with Range, If-Range and ETag support."""

    served: ServedFile

    def do_GET(self):
        served = self.served
        range_header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        record = {"path": self.path, "range": range_header, "if_range": if_range, "status": None}
        served.requests.append(record)
        if self.path.split("?")[0] != "/demo.zip":
            record["status"] = 404
            self.send_error(404, "Not Found")
            return

        body = served.body
        range_match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        validator_matches = if_range is None or if_range in (served.etag, served.last_modified)
        start = 0
        if range_match and validator_matches and not served.ignore_range:
            start = int(range_match.group(1))
            if start >= len(body):
                record["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if served.misreport_range:
                start = 0
            record["status"] = 206
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            record["status"] = 200
            self.send_response(200)

        content = body[start:]
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(content)))
        if served.etag is not None:
            self.send_header("ETag", served.etag)
        if served.last_modified is not None:
            self.send_header("Last-Modified", served.last_modified)
        self.end_headers()
        if served.drop_after_bytes is not None:
            content = content[: served.drop_after_bytes]
            served.drop_after_bytes = None
        # HTTP/1.0 closes the connection when this method returns.
        self.wfile.write(content)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def range_server(monkeypatch, caplog):
    """Serve LARGE_DATASET_FILES as a zip at /demo.zip on 127.0.0.1 and yield (URL, ServedFile)."""
    # A hanging test should fail in seconds, not after the production timeout.
    monkeypatch.setattr(fetch_module, "DOWNLOAD_TIMEOUT_S", 5)
    caplog.set_level(logging.INFO, logger=fetch_module.__name__)
    served = ServedFile(body=make_zip(LARGE_DATASET_FILES))
    handler = type("Handler", (RangeHandler,), {"served": served})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}/demo.zip", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def break_first_download(url, served, destination, md5=None) -> int:
    """Drop the connection a third of the way into a download of `url` and return the bytes received."""
    partial_bytes = len(served.body) // 3
    served.drop_after_bytes = partial_bytes
    with pytest.raises(FetchError, match=f"received {partial_bytes} of {len(served.body)} bytes"):
        fetch_dataset(url, destination, md5=md5)
    return partial_bytes


def test_fetch_url_resumes_after_dropped_connection(tmp_path, range_server, caplog):
    url, served = range_server
    payload = served.body
    partial_bytes = len(payload) // 3
    served.drop_after_bytes = partial_bytes
    destination = tmp_path / "raw" / "demo"
    part = tmp_path / "raw" / "demo.zip.part"
    record = tmp_path / "raw" / "demo.zip.part.json"

    with pytest.raises(FetchError) as caught:
        fetch_dataset(url, destination, md5=md5_of(payload))

    message = str(caught.value)
    assert f"received {partial_bytes} of {len(payload)} bytes" in message
    assert f"kept in {part}" in message
    assert part.read_bytes() == payload[:partial_bytes]
    assert json.loads(record.read_text()) == {"url": url, "validator": ETAG, "total_bytes": len(payload)}
    assert not destination.exists()
    assert not (tmp_path / "raw" / "demo.zip").exists()

    fetch_dataset(url, destination, md5=md5_of(payload))

    assert len(served.requests) == 2
    assert served.requests[1]["range"] == f"bytes={partial_bytes}-"
    assert served.requests[1]["if_range"] == ETAG
    assert served.requests[1]["status"] == 206
    assert f"Resuming the download of {url} at byte {partial_bytes}" in caplog.text
    assert read_tree(destination) == LARGE_DATASET_FILES
    assert sorted(path.name for path in destination.parent.iterdir()) == ["demo"]


def test_fetch_url_restarts_when_range_ignored(tmp_path, range_server, caplog):
    url, served = range_server
    destination = tmp_path / "demo"
    partial_bytes = break_first_download(url, served, destination)
    served.ignore_range = True

    # The md5 check passes only if the full body replaced the partial file instead of following it.
    fetch_dataset(url, destination, md5=md5_of(served.body))

    assert served.requests[1]["range"] == f"bytes={partial_bytes}-"
    assert served.requests[1]["status"] == 200
    assert f"Restarting the download of {url} at byte 0 instead of byte {partial_bytes}" in caplog.text
    assert read_tree(destination) == LARGE_DATASET_FILES
    assert sorted(path.name for path in tmp_path.iterdir()) == ["demo"]


def test_fetch_url_restarts_when_file_changed(tmp_path, range_server, caplog):
    url, served = range_server
    destination = tmp_path / "demo"
    partial_bytes = break_first_download(url, served, destination)
    new_files = {**LARGE_DATASET_FILES, "README.md": b"demo dataset, version 2\n"}
    served.body = make_zip(new_files)
    served.etag = '"v2"'

    fetch_dataset(url, destination, md5=md5_of(served.body))

    assert served.requests[1]["if_range"] == ETAG
    assert served.requests[1]["status"] == 200
    assert f"Restarting the download of {url} at byte 0 instead of byte {partial_bytes}" in caplog.text
    assert read_tree(destination) == new_files


def test_fetch_url_restarts_on_wrong_content_range(tmp_path, range_server, caplog):
    url, served = range_server
    destination = tmp_path / "demo"
    partial_bytes = break_first_download(url, served, destination)
    served.misreport_range = True

    fetch_dataset(url, destination, md5=md5_of(served.body))

    assert [request["status"] for request in served.requests] == [200, 206, 200]
    assert served.requests[2]["range"] is None
    assert f"Restarting the download of {url} at byte 0 instead of byte {partial_bytes}" in caplog.text
    assert read_tree(destination) == LARGE_DATASET_FILES


def test_fetch_url_resumes_with_last_modified(tmp_path, range_server):
    url, served = range_server
    served.etag = None
    served.last_modified = "Tue, 15 Nov 1994 08:12:31 GMT"
    destination = tmp_path / "demo"
    partial_bytes = break_first_download(url, served, destination)

    fetch_dataset(url, destination, md5=md5_of(served.body))

    assert served.requests[1]["range"] == f"bytes={partial_bytes}-"
    assert served.requests[1]["if_range"] == served.last_modified
    assert served.requests[1]["status"] == 206
    assert read_tree(destination) == LARGE_DATASET_FILES


@pytest.mark.parametrize(
    ("etag", "last_modified"),
    [
        (None, None),
        ('W/"weak"', None),
        # Not a strong validator, because it is not at least a second older than the Date header.
        (None, "Fri, 31 Dec 9999 23:59:59 GMT"),
    ],
)
def test_fetch_url_without_validator_keeps_nothing(tmp_path, range_server, caplog, etag, last_modified):
    url, served = range_server
    served.etag = etag
    served.last_modified = last_modified
    destination = tmp_path / "demo"
    partial_bytes = len(served.body) // 3
    served.drop_after_bytes = partial_bytes

    with pytest.raises(FetchError) as caught:
        fetch_dataset(url, destination)

    message = str(caught.value)
    assert "sent no ETag or Last-Modified header" in message
    assert f"{partial_bytes} bytes received cannot be resumed and were deleted" in message
    assert f"{url} sent no ETag or Last-Modified header, so an interrupted download cannot resume" in caplog.text
    assert list(tmp_path.iterdir()) == []

    fetch_dataset(url, destination)

    assert served.requests[1]["range"] is None
    assert read_tree(destination) == LARGE_DATASET_FILES


def test_fetch_url_other_url_restarts(tmp_path, range_server, caplog):
    url, served = range_server
    destination = tmp_path / "demo"
    partial_bytes = break_first_download(url, served, destination)
    other_url = f"{url}?mirror=2"

    fetch_dataset(other_url, destination, md5=md5_of(served.body))

    assert served.requests[1]["path"] == "/demo.zip?mirror=2"
    assert served.requests[1]["range"] is None
    assert f"Restarting the download of {other_url} at byte 0 instead of byte {partial_bytes}" in caplog.text
    assert f"the partial file was downloaded from {url!r}" in caplog.text
    assert read_tree(destination) == LARGE_DATASET_FILES


def test_fetch_url_partial_without_record_restarts(tmp_path, range_server, caplog):
    url, served = range_server
    destination = tmp_path / "demo"
    (tmp_path / "demo.zip.part").write_bytes(served.body[:100])

    fetch_dataset(url, destination, md5=md5_of(served.body))

    assert served.requests[0]["range"] is None
    assert f"Restarting the download of {url} at byte 0 instead of byte 100" in caplog.text
    assert "demo.zip.part.json is missing" in caplog.text
    assert read_tree(destination) == LARGE_DATASET_FILES


@pytest.mark.parametrize(
    ("extra_bytes", "expected_statuses"),
    [
        # A run that stopped between the last byte and the rename leaves a complete file to reuse.
        (b"", [416]),
        # A partial file longer than the served file cannot be part of it, so the download restarts.
        (b"tail", [416, 200]),
    ],
)
def test_fetch_url_unsatisfiable_range(tmp_path, range_server, extra_bytes, expected_statuses):
    url, served = range_server
    destination = tmp_path / "demo"
    (tmp_path / "demo.zip.part").write_bytes(served.body + extra_bytes)
    (tmp_path / "demo.zip.part.json").write_text(json.dumps({"url": url, "validator": ETAG, "total_bytes": None}))

    fetch_dataset(url, destination, md5=md5_of(served.body))

    assert [request["status"] for request in served.requests] == expected_statuses
    assert served.requests[0]["range"] == f"bytes={len(served.body) + len(extra_bytes)}-"
    assert read_tree(destination) == LARGE_DATASET_FILES
    assert sorted(path.name for path in tmp_path.iterdir()) == ["demo"]


def test_fetch_url_rejects_insufficient_disk_space(tmp_path, range_server, monkeypatch):
    url, served = range_server
    monkeypatch.setattr(fetch_module, "free_disk_bytes", lambda folder: 1000)

    with pytest.raises(FetchError) as caught:
        fetch_dataset(url, tmp_path / "demo")

    message = str(caught.value)
    assert f"not enough free disk space in {tmp_path} for downloading and extracting {url}" in message
    # Archive size x 2: the download plus the estimated size of the extracted files.
    assert f"needs {2 * len(served.body)} bytes" in message
    assert "but 1000 bytes" in message
    assert list(tmp_path.iterdir()) == []


def test_fetch_url_disk_check_counts_partial(tmp_path, range_server, monkeypatch):
    url, served = range_server
    destination = tmp_path / "demo"
    partial_bytes = break_first_download(url, served, destination)
    needed_bytes = (len(served.body) - partial_bytes) + len(served.body)
    monkeypatch.setattr(fetch_module, "free_disk_bytes", lambda folder: needed_bytes - 1)

    with pytest.raises(FetchError) as caught:
        fetch_dataset(url, destination)

    assert f"needs {needed_bytes} bytes" in str(caught.value)
    assert f"{partial_bytes} bytes received are kept" in str(caught.value)
    assert (tmp_path / "demo.zip.part").stat().st_size == partial_bytes

    monkeypatch.setattr(fetch_module, "free_disk_bytes", lambda folder: needed_bytes)
    fetch_dataset(url, destination, md5=md5_of(served.body))

    assert served.requests[-1]["range"] == f"bytes={partial_bytes}-"
    assert read_tree(destination) == LARGE_DATASET_FILES


def test_fetch_url_wrong_md5_after_resume(tmp_path, range_server):
    url, served = range_server
    destination = tmp_path / "demo"
    destination.mkdir()
    (destination / "old.txt").write_text("old")
    user_archive = tmp_path / "demo.zip"
    user_archive.write_bytes(b"the user's own archive")
    wrong = "0" * 32
    partial_bytes = break_first_download(url, served, destination, md5=wrong)

    with pytest.raises(FetchError) as caught:
        fetch_dataset(url, destination, md5=wrong)

    message = str(caught.value)
    assert served.requests[1]["range"] == f"bytes={partial_bytes}-"
    assert served.requests[1]["status"] == 206
    assert url in message
    assert wrong in message
    assert md5_of(served.body) in message
    assert "next run starts from byte 0" in message
    assert read_tree(destination) == {"old.txt": b"old"}
    assert user_archive.read_bytes() == b"the user's own archive"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["demo", "demo.zip"]


# Downloads over FTP, from a minimal server in passive mode.


@dataclasses.dataclass
class FtpFile:
    """The file that FtpHandler serves as /demo.zip."""

    body: bytes
    # Send only this many bytes of the next transfer, then close the data connection.
    drop_after_bytes: int | None = None
    commands: list[str] = dataclasses.field(default_factory=list)


class FtpHandler(socketserver.StreamRequestHandler):
    """Respond to the FTP commands that urllib sends to retrieve /demo.zip in passive mode."""

    served: FtpFile

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self):
        self.reply("220 test server ready")
        data_listener = None
        try:
            for raw_line in self.rfile:
                command, _, argument = raw_line.decode().strip().partition(" ")
                command = command.upper()
                self.served.commands.append(command)
                if command == "USER":
                    self.reply("331 send password")
                elif command == "PASS":
                    self.reply("230 logged in")
                elif command == "CWD":
                    self.reply("250 directory changed")
                elif command == "TYPE":
                    self.reply("200 type set")
                elif command == "PASV":
                    data_listener = socket.create_server(("127.0.0.1", 0))
                    port = data_listener.getsockname()[1]
                    self.reply(f"227 Entering Passive Mode (127,0,0,1,{port >> 8},{port & 0xFF})")
                elif command == "RETR" and argument == "demo.zip" and data_listener is not None:
                    self.send_file(data_listener)
                    data_listener.close()
                    data_listener = None
                elif command == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("550 not available")
        finally:
            if data_listener is not None:
                data_listener.close()

    def send_file(self, data_listener: socket.socket) -> None:
        body = self.served.body
        dropped = self.served.drop_after_bytes is not None
        if dropped:
            body = body[: self.served.drop_after_bytes]
            self.served.drop_after_bytes = None
        # ftplib reads the size from the parentheses, and urllib reports it as Content-Length.
        self.reply(f"150 Opening BINARY mode data connection for demo.zip ({len(self.served.body)} bytes)")
        connection, _ = data_listener.accept()
        with connection:
            connection.sendall(body)
        self.reply("426 Connection closed; transfer aborted" if dropped else "226 Transfer complete")


class ThreadingFtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def ftp_server(monkeypatch, caplog):
    """Serve LARGE_DATASET_FILES as a zip at /demo.zip over FTP on 127.0.0.1 and yield (URL, FtpFile)."""
    monkeypatch.setattr(fetch_module, "DOWNLOAD_TIMEOUT_S", 5)
    caplog.set_level(logging.INFO, logger=fetch_module.__name__)
    served = FtpFile(body=make_zip(LARGE_DATASET_FILES))
    handler = type("Handler", (FtpHandler,), {"served": served})
    server = ThreadingFtpServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"ftp://{host}:{port}/demo.zip", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_fetch_ftp_downloads_from_zero(tmp_path, ftp_server, caplog):
    url, served = ftp_server
    destination = tmp_path / "demo"
    (tmp_path / "demo.zip.part").write_bytes(b"stale")

    fetch_dataset(url, destination, md5=md5_of(served.body))

    assert "RETR" in served.commands
    assert "REST" not in served.commands
    assert f"Restarting the download of {url} at byte 0 instead of byte 5" in caplog.text
    assert "FTP downloads cannot resume" in caplog.text
    assert read_tree(destination) == LARGE_DATASET_FILES
    assert sorted(path.name for path in tmp_path.iterdir()) == ["demo"]


def test_fetch_ftp_dropped_connection_advice(tmp_path, ftp_server):
    url, served = ftp_server
    partial_bytes = len(served.body) // 3
    served.drop_after_bytes = partial_bytes

    with pytest.raises(FetchError) as caught:
        fetch_dataset(url, tmp_path / "demo")

    message = str(caught.value)
    assert url in message
    assert f"received {partial_bytes} of {len(served.body)} bytes" in message
    assert "FTP downloads cannot resume" in message
    assert "download it with another tool" in message
    assert "to the local .zip file" in message
    assert list(tmp_path.iterdir()) == []


def test_fetch_ftp_connection_refused_advice(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"ftp://127.0.0.1:{unused.getsockname()[1]}/demo.zip"

        with pytest.raises(FetchError) as caught:
            fetch_dataset(url, tmp_path / "demo")

    assert url in str(caught.value)
    assert "FTP downloads cannot resume" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_sop_archive_download_resumes(tmp_path, range_server):
    """A SOP-layout archive served over HTTP survives a dropped connection and reads as SOP."""
    from conftest import make_sop_archive
    from image_retrieval.config import DataConfig, SopDataConfig
    from image_retrieval.data.datasets import fetch_raw_dataset, read_dataset

    url, served = range_server
    served.body = make_sop_archive(tmp_path / "sop.zip", train_classes=4, test_classes=2, images_per_class=3).read_bytes()
    data = DataConfig(dataset="sop", sop=SopDataConfig(source=url, md5=md5_of(served.body)))
    served.drop_after_bytes = len(served.body) // 2

    with pytest.raises(FetchError):
        fetch_raw_dataset(data, tmp_path / "raw")
    fetch_raw_dataset(data, tmp_path / "raw")
    table = read_dataset(data, tmp_path / "raw")

    assert served.requests[-1]["status"] == 206
    assert table.height == 18
    assert sorted(table["split"].unique().to_list()) == ["test", "train"]
