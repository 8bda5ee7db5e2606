"""Copy, extract or download a dataset into a folder that appears complete or not at all."""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import shutil
import stat
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from image_retrieval.io import atomic_path

logger = logging.getLogger(__name__)

# Seconds that a connection attempt or a single read may wait for data before the download fails.
DOWNLOAD_TIMEOUT_S = 60
DOWNLOAD_CHUNK_BYTES = 1 << 20

_SOURCE_HINT = "set data.demo.source to a folder, a .zip file or an http(s) URL"
_MD5_PATTERN = re.compile(r"[0-9a-f]{32}")


class FetchError(RuntimeError):
    """A dataset could not be copied, downloaded, verified or extracted."""


def fetch_dataset(source: str, destination: Path, *, md5: str | None = None) -> Path:
    """Copy, extract or download the dataset at `source` into `destination` and return `destination`.

    `source` is a local folder (its contents are copied), a local .zip file, or an
    http(s) URL of a .zip file. `md5`, when given, is checked against the .zip file
    before extraction. `destination` is replaced only after the whole dataset is
    in place, so a failure leaves any earlier `destination` untouched. A download
    is renamed to `<destination>.zip` once complete and verified, replacing any
    file of that name, and deleted after extraction.
    Raises FetchError naming the source, file or archive member that failed.
    """
    destination = Path(destination)
    expected_md5 = _normalize_md5(md5)

    if source.startswith(("http://", "https://")):
        _fetch_url(source, destination, expected_md5)
        return destination

    if "://" in source:
        raise FetchError(f"unsupported URL scheme in source {source!r}; {_SOURCE_HINT}")

    source_path = Path(source)
    if source_path.is_dir():
        if expected_md5 is not None:
            raise FetchError(
                f"an md5 checksum was given for the folder {source_path}, but checksums apply "
                "only to .zip files; remove the checksum or point the source at a .zip file"
            )
        _copy_folder(source_path, destination)
    elif source_path.is_file() and source_path.suffix.lower() == ".zip":
        if expected_md5 is not None:
            _verify_md5(source_path, expected_md5)
        _extract_zip(source_path, destination)
    elif source_path.exists():
        raise FetchError(f"source {source_path} is neither a folder nor a .zip file; {_SOURCE_HINT}")
    else:
        raise FetchError(f"source {source_path} not found; {_SOURCE_HINT}")

    return destination


def _normalize_md5(md5: str | None) -> str | None:
    if md5 is None:
        return None
    normalized = md5.strip().lower()
    if not _MD5_PATTERN.fullmatch(normalized):
        raise FetchError(f"md5={md5!r} is not an MD5 checksum; expected 32 hexadecimal digits")
    return normalized


def _copy_folder(source: Path, destination: Path) -> None:
    source_resolved = source.resolve()
    destination_resolved = destination.resolve()
    if destination_resolved == source_resolved or source_resolved in destination_resolved.parents:
        raise FetchError(
            f"destination {destination} is inside the source folder {source}; "
            "choose a destination outside the source"
        )

    logger.info("Copying %s to %s", source, destination)
    try:
        with atomic_path(destination) as temporary:
            shutil.copytree(source, temporary)
    except (OSError, shutil.Error) as error:
        raise FetchError(f"copying {source} to {destination} failed: {error}") from error


def _extract_zip(archive_path: Path, destination: Path) -> None:
    """Extract `archive_path` into `destination` after checking every member name."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            members = archive.infolist()
            unsafe = [f"{member.filename!r} ({reason})" for member in members if (reason := _unsafe_reason(member))]
            if unsafe:
                raise FetchError(
                    f"{archive_path} contains unsafe members, so nothing was extracted: {', '.join(unsafe)}; "
                    "rebuild the archive with relative paths and regular files only"
                )

            logger.info("Extracting %d members of %s to %s", len(members), archive_path, destination)
            with atomic_path(destination) as temporary:
                temporary.mkdir()
                archive.extractall(temporary)
    except FetchError:
        raise
    except zipfile.BadZipFile as error:
        raise FetchError(f"{archive_path} is not a valid .zip file ({error}); download or rebuild it") from error
    except (NotImplementedError, RuntimeError) as error:
        # zipfile raises these for unsupported compression methods and encrypted members.
        raise FetchError(
            f"{archive_path} cannot be extracted ({error}); rebuild it without encryption, "
            "using the deflate or store method"
        ) from error
    except OSError as error:
        raise FetchError(f"extracting {archive_path} to {destination} failed: {error}") from error


def _unsafe_reason(member: zipfile.ZipInfo) -> str | None:
    """Return why extracting `member` could write outside the destination, or None when it is safe."""
    name = member.filename
    # Check both separators: a backslash is a separator on Windows and some zip tools write them.
    posix_name = PurePosixPath(name.replace("\\", "/"))
    if posix_name.is_absolute() or PureWindowsPath(name).drive:
        return "absolute path"
    if ".." in posix_name.parts:
        return "'..' path component"
    # The upper 16 bits of external_attr are the Unix st_mode of the archived file.
    if stat.S_ISLNK(member.external_attr >> 16):
        return "symbolic link"
    return None


def _verify_md5(path: Path, expected_md5: str, description: str | None = None) -> None:
    """Raise FetchError unless the MD5 of `path` is `expected_md5`.

    `description`, when given, names the file in the message in place of `path`.
    """
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        while chunk := stream.read(DOWNLOAD_CHUNK_BYTES):
            digest.update(chunk)
    actual_md5 = digest.hexdigest()
    if actual_md5 != expected_md5:
        raise FetchError(
            f"md5 checksum mismatch for {description or path}: expected {expected_md5}, got {actual_md5}; "
            "the file is corrupt or changed, so fetch it again or update the checksum"
        )


def _fetch_url(url: str, destination: Path, expected_md5: str | None) -> None:
    # The archive is kept under this name only between a verified download and the
    # end of extraction, then deleted, because the extracted folder is the output.
    archive_path = destination.with_name(f"{destination.name}.zip")
    with atomic_path(archive_path) as temporary:
        _download(url, temporary)
        if expected_md5 is not None:
            _verify_md5(temporary, expected_md5, f"the file downloaded from {url}")
            logger.info("Verified md5 %s of %s", expected_md5, url)
    try:
        _extract_zip(archive_path, destination)
    finally:
        archive_path.unlink()


def _download(url: str, target: Path) -> None:
    """Stream `url` into `target`, raising FetchError when the body ends early or the request fails."""
    # TODO: resume an interrupted download with an HTTP Range request from the bytes already written.
    request = urllib.request.Request(url, headers={"User-Agent": "image-retrieval"})
    logger.info("Downloading %s", url)
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            length_header = response.headers.get("Content-Length")
            expected_bytes = int(length_header) if length_header and length_header.isdigit() else None
            received_bytes = _stream_to_file(response, target, expected_bytes, url)
    except http.client.HTTPException as error:
        # IncompleteRead, BadStatusLine and other protocol errors are not OSErrors.
        raise FetchError(f"downloading {url} failed: {error!r}; try again") from error
    except urllib.error.HTTPError as error:
        # The error carries the open response, so close its connection now.
        error.close()
        raise FetchError(f"HTTP {error.code} {error.reason} from {url}; check the URL") from error
    except urllib.error.URLError as error:
        raise FetchError(f"downloading {url} failed: {error.reason}; check the URL and the network") from error
    except TimeoutError as error:
        raise FetchError(
            f"downloading {url} timed out after {DOWNLOAD_TIMEOUT_S} s without data; try again later"
        ) from error
    except OSError as error:
        raise FetchError(f"downloading {url} failed: {error}; try again") from error

    if expected_bytes is not None and received_bytes != expected_bytes:
        raise FetchError(
            f"download of {url} is incomplete: received {received_bytes} of {expected_bytes} bytes "
            "before the server closed the connection; try again"
        )
    logger.info("Downloaded %d bytes from %s", received_bytes, url)


def _stream_to_file(response, target: Path, expected_bytes: int | None, url: str) -> int:
    """Copy the response body into `target` in chunks, showing a progress bar on stderr."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    received_bytes = 0
    with progress, open(target, "wb") as stream:
        task = progress.add_task(f"Downloading {url.rsplit('/', 1)[-1]}", total=expected_bytes)
        while chunk := response.read(DOWNLOAD_CHUNK_BYTES):
            stream.write(chunk)
            received_bytes += len(chunk)
            progress.update(task, advance=len(chunk))
    return received_bytes
