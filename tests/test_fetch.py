"""Tests for fetch_dataset with local folders, local archives and a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import stat
import threading
import zipfile

import pytest

from image_retrieval.data.fetch import FetchError, fetch_dataset

DATASET_FILES = {
    "images/cat/a.png": b"cat image a",
    "images/cat/b.png": b"cat image b",
    "images/dog/c.png": b"dog image c",
    "README.md": b"demo dataset\n",
}


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
        fetch_dataset("ftp://127.0.0.1/demo.zip", tmp_path / "demo")


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
