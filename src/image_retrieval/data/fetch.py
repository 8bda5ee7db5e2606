"""Copy, extract or download a dataset into a folder that appears complete or not at all."""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import hashlib
import http.client
import logging
import math
import os
import re
import shutil
import stat
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from image_retrieval.io import atomic_path, read_json, write_json

logger = logging.getLogger(__name__)

# Seconds that a connection attempt or a single read may wait for data before the download fails.
DOWNLOAD_TIMEOUT_S = 60
DOWNLOAD_CHUNK_BYTES = 1 << 20

# Estimated size of the extracted files per byte of archive, used to check the free disk space
# before a download starts, when only the archive size is known. The image datasets fetched here
# are JPEG and PNG files, which zip barely compresses, so a fresh download needs about twice the
# archive size: the archive plus its extracted copy. The check before extraction uses the exact
# uncompressed sizes stored in the archive instead.
EXTRACTED_BYTES_PER_ARCHIVE_BYTE = 1.0

# Stanford Online Products, a product image retrieval benchmark. SOP_URL is an FTP URL, so an
# interrupted download of it cannot resume. SOP_MD5 is the MD5 checksum of that archive.
SOP_URL = "ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip"
SOP_MD5 = "7f73d41a2f44250d4779881525aea32e"

_SOURCE_HINT = "set {parameter} to a folder, a .zip file or an http(s) or ftp URL"
_FTP_HINT = (
    "FTP downloads cannot resume, so every attempt starts again from byte 0. "
    "For a large file, download it with another tool, then set the dataset's source "
    "(data.<dataset>.source in params.yaml) to the local .zip file"
)
_CONTENT_RANGE_PATTERN = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE_PATTERN = re.compile(r"bytes \*/(\d+)")
_MD5_PATTERN = re.compile(r"[0-9a-f]{32}")


class FetchError(RuntimeError):
    """A dataset could not be copied, downloaded, verified or extracted."""


def fetch_dataset(
    source: str, destination: Path, *, md5: str | None = None, parameter: str = "data.demo.source"
) -> Path:
    """Copy, extract or download the dataset at `source` into `destination` and return `destination`.

    `source` is a local folder (its contents are copied), a local .zip file, or an
    http(s) or ftp URL of a .zip file. `md5`, when given, is checked against the .zip
    file before extraction. `destination` is replaced only after the whole dataset is
    in place, so a failure leaves any earlier `destination` untouched.

    A download is written to `<destination>.zip.part`. When an http(s) download fails
    after the server sent an ETag or Last-Modified validator, the partial file is kept
    with a `<destination>.zip.part.json` record of the URL and validator. The next call
    with the same URL then resumes with a Range request. FTP downloads always start
    from byte 0. Once complete and verified, the download is renamed to
    `<destination>.zip`, replacing any file of that name, and deleted after
    extraction. Free disk space is checked before the download and before extraction.
    Raises FetchError naming the source, file or archive member that failed;
    errors about the source itself tell the user to fix `parameter`.
    """
    hint = _SOURCE_HINT.format(parameter=parameter)
    destination = Path(destination)
    expected_md5 = _normalize_md5(md5)

    if source.startswith(("http://", "https://", "ftp://")):
        _fetch_url(source, destination, expected_md5)
        return destination

    if "://" in source:
        raise FetchError(f"unsupported URL scheme in source {source!r}; {hint}")

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
        raise FetchError(f"source {source_path} is neither a folder nor a .zip file; {hint}")
    else:
        raise FetchError(f"source {source_path} not found; {hint}")

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

            extracted_bytes = sum(member.file_size for member in members)
            destination.parent.mkdir(parents=True, exist_ok=True)
            _check_free_space(destination.parent, extracted_bytes, f"extracting {archive_path}")

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


def free_disk_bytes(folder: Path) -> int:
    """Return the free disk space, in bytes, of the file system that contains `folder`.

    The free space checks call this module-level function, so tests can replace it.
    """
    return shutil.disk_usage(folder).free


def _check_free_space(folder: Path, needed_bytes: int, operation: str, breakdown: str = "") -> None:
    """Raise FetchError unless `folder` has `needed_bytes` of free disk space for `operation`.

    `breakdown`, when given, follows the needed size in the message to say what it consists of.
    """
    free_bytes = free_disk_bytes(folder)
    if needed_bytes > free_bytes:
        raise FetchError(
            f"not enough free disk space in {folder} for {operation}. It needs {needed_bytes} bytes "
            f"({_format_gibibytes(needed_bytes)}){breakdown}, but {free_bytes} bytes "
            f"({_format_gibibytes(free_bytes)}) are free. Free up space there or choose a destination on a larger disk"
        )
    logger.debug("%s needs %d bytes in %s, and %d bytes are free", operation, needed_bytes, folder, free_bytes)


def _format_gibibytes(size_bytes: int) -> str:
    return f"{size_bytes / 2**30:.2f} GiB"


def _fetch_url(url: str, destination: Path, expected_md5: str | None) -> None:
    # The archive is kept under this name only between a verified download and the
    # end of extraction, then deleted, because the extracted folder is the output.
    archive_path = destination.with_name(f"{destination.name}.zip")
    part_path = archive_path.with_name(f"{archive_path.name}.part")
    record_path = part_path.with_name(f"{part_path.name}.json")
    archive_path.parent.mkdir(parents=True, exist_ok=True)

    if url.startswith("ftp://"):
        _download_ftp(url, part_path, record_path)
    else:
        _download_http(url, part_path, record_path)

    if expected_md5 is not None:
        try:
            _verify_md5(part_path, expected_md5, f"the file downloaded from {url}")
        except FetchError as error:
            # Resuming cannot repair a file that is already complete, so the next run must start over.
            _discard_partial(part_path, record_path)
            raise FetchError(
                f"{error}. The download {part_path} was deleted, so the next run starts from byte 0"
            ) from error
        logger.info("Verified md5 %s of %s", expected_md5, url)

    record_path.unlink(missing_ok=True)
    os.replace(part_path, archive_path)
    try:
        _extract_zip(archive_path, destination)
    finally:
        archive_path.unlink()


def _download_http(url: str, part_path: Path, record_path: Path) -> None:
    """Download `url` into `part_path`, resuming a partial download that `record_path` describes.

    The record is JSON with the keys "url", "validator" (the ETag, else the Last-Modified
    value, that the server sent) and "total_bytes" (the full file size, or null when unknown).
    It is written before the body is streamed, only when the server sent a validator, so a
    failed download without one is deleted instead of kept.
    """
    offset, validator = _find_resume_point(url, part_path, record_path)
    with _download_errors(url, lambda: _keep_or_discard_partial(url, part_path, record_path)):
        must_restart = _request_and_stream(url, part_path, record_path, offset, validator)
        if must_restart:
            _request_and_stream(url, part_path, record_path, 0, None)


def _find_resume_point(url: str, part_path: Path, record_path: Path) -> tuple[int, str | None]:
    """Return the byte offset and validator to resume `url` from, or (0, None) with no partial download left."""
    if not part_path.exists():
        record_path.unlink(missing_ok=True)
        return 0, None

    offset = part_path.stat().st_size
    validator, reason = _read_resume_record(record_path, url)
    if validator is None or offset == 0:
        _restart(url, part_path, record_path, offset, reason or f"{part_path} is empty")
        return 0, None

    logger.info("Found %d bytes of %s in %s to resume from", offset, url, part_path)
    return offset, validator


def _read_resume_record(record_path: Path, url: str) -> tuple[str | None, str]:
    """Return (validator, "") when the record at `record_path` lets `url` resume, else (None, the reason)."""
    try:
        record = read_json(record_path)
    except FileNotFoundError:
        return None, f"{record_path} is missing"
    except (OSError, ValueError) as error:
        return None, f"{record_path} cannot be read ({error})"

    if not isinstance(record, dict):
        return None, f"{record_path} does not contain a JSON object"
    if record.get("url") != url:
        return None, f"the partial file was downloaded from {record.get('url')!r}"
    validator = record.get("validator")
    if not isinstance(validator, str) or not validator:
        return None, "the server sent no ETag or Last-Modified header to resume with"
    return validator, ""


def _restart(url: str, part_path: Path, record_path: Path, offset: int, reason: str) -> None:
    logger.warning(
        "Restarting the download of %s at byte 0 instead of byte %d, deleting %s, because %s",
        url,
        offset,
        part_path,
        reason,
    )
    _discard_partial(part_path, record_path)


def _discard_partial(part_path: Path, record_path: Path) -> None:
    part_path.unlink(missing_ok=True)
    record_path.unlink(missing_ok=True)


def _keep_or_discard_partial(url: str, part_path: Path, record_path: Path) -> str:
    """Keep a resumable partial download after a failure, else delete it.

    Returns the sentence that ends the error message and names what was kept or deleted, or "" for nothing.
    """
    size_bytes = part_path.stat().st_size if part_path.exists() else 0
    if size_bytes and record_path.exists():
        logger.info("Kept %d bytes of %s in %s for the next run to resume from", size_bytes, url, part_path)
        return f"The {size_bytes} bytes received are kept in {part_path}, and the next run resumes from there"

    _discard_partial(part_path, record_path)
    if size_bytes:
        logger.warning(
            "Deleted %d bytes of %s because the server sent no ETag or Last-Modified header", size_bytes, url
        )
        return (
            f"The server sent no ETag or Last-Modified header, so the {size_bytes} bytes received "
            "cannot be resumed and were deleted"
        )
    return ""


def _request_and_stream(url: str, part_path: Path, record_path: Path, offset: int, validator: str | None) -> bool:
    """Request `url` from byte `offset` on and write the body into `part_path`.

    A nonzero `offset` sends Range and If-Range with `validator`. Returns True when the
    server's response cannot continue the partial download, which is then deleted, so the
    caller must request the file again from byte 0. Returns False when the file is complete.
    """
    headers = {"User-Agent": "image-retrieval"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = validator
        logger.info("Requesting %s from byte %d with If-Range %s", url, offset, validator)
    else:
        logger.info("Downloading %s", url)

    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=DOWNLOAD_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if offset and error.code == 416:
            error.close()
            return _handle_unsatisfiable_range(url, part_path, record_path, offset, error.headers.get("Content-Range"))
        raise

    with response:
        body_bytes = _content_length(response.headers)
        response_validator = _strong_validator(response.headers)
        if response.status == 206 and offset:
            content_range = _parse_content_range(response.headers.get("Content-Range"))
            if content_range is None or content_range[0] != offset:
                content_range_header = response.headers.get("Content-Range")
                reason = f"the server sent Content-Range {content_range_header!r} for Range bytes={offset}-"
                _restart(url, part_path, record_path, offset, reason)
                return True
            if response_validator is not None and response_validator != validator:
                reason = f"the server sent the range with validator {response_validator}, not {validator}"
                _restart(url, part_path, record_path, offset, reason)
                return True
            start, end, total_bytes = content_range
            if body_bytes is None:
                body_bytes = end - start + 1
            # A 206 response may omit the validator, which If-Range has just confirmed.
            response_validator = validator
            logger.info("Resuming the download of %s at byte %d", url, offset)
        elif response.status == 200:
            if offset:
                reason = (
                    "the server sent the whole file (HTTP 200) instead of the requested range, "
                    "because it ignores Range requests or the file changed"
                )
                _restart(url, part_path, record_path, offset, reason)
                offset = 0
            total_bytes = body_bytes
        else:
            raise FetchError(f"unexpected HTTP {response.status} {response.reason} from {url}. Check the URL")

        _check_download_space(url, part_path.parent, body_bytes, total_bytes, offset)
        if response_validator is None:
            logger.info("%s sent no ETag or Last-Modified header, so an interrupted download cannot resume", url)
            record_path.unlink(missing_ok=True)
        else:
            write_json(record_path, {"url": url, "validator": response_validator, "total_bytes": total_bytes})

        received_bytes = _stream_to_file(response, part_path, offset, total_bytes, url)

    expected_bytes = offset + body_bytes if body_bytes is not None else total_bytes
    _check_complete(url, offset + received_bytes, expected_bytes)
    return False


def _handle_unsatisfiable_range(
    url: str, part_path: Path, record_path: Path, offset: int, content_range: str | None
) -> bool:
    """Handle a 416 response to Range bytes=`offset`- and return whether the download must restart.

    Content-Range "bytes */`offset`" means that `part_path` already contains the whole file.
    Any other value deletes the partial download.
    """
    match = _UNSATISFIED_RANGE_PATTERN.fullmatch((content_range or "").strip())
    if match and int(match.group(1)) == offset:
        logger.info("%s already contains all %d bytes of %s", part_path, offset, url)
        return False
    reason = f"the server rejected Range bytes={offset}- with HTTP 416 and Content-Range {content_range!r}"
    _restart(url, part_path, record_path, offset, reason)
    return True


def _download_ftp(url: str, part_path: Path, record_path: Path) -> None:
    """Download `url` into `part_path` from byte 0, deleting the partial file on failure."""
    if part_path.exists():
        _restart(url, part_path, record_path, part_path.stat().st_size, "FTP downloads cannot resume")
    record_path.unlink(missing_ok=True)

    logger.warning("Downloading %s over FTP, so an interrupted download starts again from byte 0", url)
    with _download_errors(url, lambda: _discard_ftp_partial(part_path, record_path)):
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            # urllib reports the size that the server sent in its 150 reply to RETR, if any.
            body_bytes = _content_length(response.headers)
            _check_download_space(url, part_path.parent, body_bytes, body_bytes, 0)
            received_bytes = _stream_to_file(response, part_path, 0, body_bytes, url)
        _check_complete(url, received_bytes, body_bytes)


def _discard_ftp_partial(part_path: Path, record_path: Path) -> str:
    _discard_partial(part_path, record_path)
    return _FTP_HINT


@contextlib.contextmanager
def _download_errors(url: str, handle_failure: Callable[[], str]) -> Iterator[None]:
    """Turn a failed download of `url` into FetchError.

    `handle_failure` runs after any failure to keep or delete the partial file, and
    the sentence it returns, if any, ends the error message.
    """
    try:
        yield
    except (FetchError, http.client.HTTPException, OSError) as error:
        message = _describe_download_error(url, error)
        advice = handle_failure()
        raise FetchError(f"{message}. {advice}" if advice else message) from error


def _describe_download_error(url: str, error: Exception) -> str:
    if isinstance(error, FetchError):
        return str(error)
    if isinstance(error, http.client.HTTPException):
        # IncompleteRead, BadStatusLine and other protocol errors are not OSErrors.
        return f"downloading {url} failed: {error!r}; try again"
    if isinstance(error, urllib.error.HTTPError):
        # The error carries the open response, so close its connection now.
        error.close()
        return f"HTTP {error.code} {error.reason} from {url}; check the URL"
    if isinstance(error, urllib.error.URLError):
        return f"downloading {url} failed: {error.reason}; check the URL and the network"
    if isinstance(error, TimeoutError):
        return f"downloading {url} timed out after {DOWNLOAD_TIMEOUT_S} s without data; try again later"
    return f"downloading {url} failed: {error}; try again"


def _check_download_space(
    url: str, folder: Path, body_bytes: int | None, total_bytes: int | None, offset: int
) -> None:
    """Check that `folder` has room for the rest of the download and the files extracted from it."""
    if body_bytes is None:
        logger.warning("%s sent no Content-Length, so free disk space is checked only before extraction", url)
        return
    archive_bytes = total_bytes if total_bytes is not None else offset + body_bytes
    extracted_bytes = math.ceil(archive_bytes * EXTRACTED_BYTES_PER_ARCHIVE_BYTE)
    breakdown = f": {body_bytes} to download and an estimated {extracted_bytes} for the extracted files"
    _check_free_space(folder, body_bytes + extracted_bytes, f"downloading and extracting {url}", breakdown)


def _check_complete(url: str, received_bytes: int, expected_bytes: int | None) -> None:
    if expected_bytes is not None and received_bytes != expected_bytes:
        raise FetchError(
            f"download of {url} is incomplete: received {received_bytes} of {expected_bytes} bytes "
            "before the server closed the connection; try again"
        )
    logger.info("Downloaded %d bytes from %s", received_bytes, url)


def _content_length(headers) -> int | None:
    value = headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _strong_validator(headers) -> str | None:
    """Return the ETag, else the Last-Modified value, of a response if If-Range may send it, else None.

    RFC 7233 section 3.2 forbids a weak ETag (W/"...") in If-Range, and a Last-Modified date
    unless it is strong, which RFC 7232 section 2.2.2 defines as at least one second before Date.
    """
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag

    last_modified = headers.get("Last-Modified")
    try:
        age = email.utils.parsedate_to_datetime(headers.get("Date")) - email.utils.parsedate_to_datetime(last_modified)
    except (TypeError, ValueError):
        # A missing or invalid Date or Last-Modified header, or one with a time zone and one without.
        return None
    return last_modified if age >= datetime.timedelta(seconds=1) else None


def _parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """Return (first byte, last byte, total bytes or None) of a Content-Range value, or None when it is invalid."""
    match = _CONTENT_RANGE_PATTERN.fullmatch((value or "").strip())
    if match is None:
        return None
    start, end = int(match.group(1)), int(match.group(2))
    total_bytes = None if match.group(3) == "*" else int(match.group(3))
    if end < start or (total_bytes is not None and end >= total_bytes):
        return None
    return start, end, total_bytes


def _stream_to_file(response, target: Path, offset: int, total_bytes: int | None, url: str) -> int:
    """Write the response body into `target` from byte `offset` on, showing a progress bar on stderr.

    Bytes of `target` past `offset` are truncated first. Returns the number of bytes received.
    """
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
    with progress, open(target, "r+b" if offset else "wb") as stream:
        stream.seek(offset)
        stream.truncate()
        task = progress.add_task(f"Downloading {url.rsplit('/', 1)[-1]}", total=total_bytes, completed=offset)
        while chunk := response.read(DOWNLOAD_CHUNK_BYTES):
            stream.write(chunk)
            received_bytes += len(chunk)
            progress.update(task, advance=len(chunk))
    return received_bytes
