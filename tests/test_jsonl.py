"""Tests for reading JSONL pair files into the common image table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from image_retrieval.data.folder import TABLE_SCHEMA
from image_retrieval.data.jsonl import JsonlFormatError, read_jsonl

IMAGE_IDS = [
    "bicycle/111.jpg",
    "bicycle/112.jpg",
    "bicycle/113.jpg",
    "chair/221.png",
    "chair/222.png",
]


def write_images(root: Path, image_ids: list[str]) -> Path:
    for index, image_id in enumerate(image_ids):
        path = root / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (index * 40 % 256, 0, 0)).save(path)
    return root


def pair(query_image: str, positive: str, label) -> str:
    return json.dumps({"query_image": query_image, "positive": positive, "label": label})


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def read_error(jsonl_path: Path, image_root: Path | None = None) -> str:
    with pytest.raises(JsonlFormatError) as excinfo:
        read_jsonl(jsonl_path, image_root)
    return str(excinfo.value)


@pytest.fixture
def image_root(tmp_path) -> Path:
    return write_images(tmp_path / "images", IMAGE_IDS)


def test_read_jsonl_columns_and_labels(image_root):
    jsonl_path = write_jsonl(image_root / "pairs.jsonl", [
        pair("chair/221.png", "chair/222.png", 7),
        pair("bicycle/111.jpg", "bicycle/112.jpg", 1001),
    ])

    table = read_jsonl(jsonl_path)

    assert table.schema == TABLE_SCHEMA
    assert table.rows() == [
        ("bicycle/111.jpg", str(image_root / "bicycle/111.jpg"), 1001, "1001", None, None),
        ("bicycle/112.jpg", str(image_root / "bicycle/112.jpg"), 1001, "1001", None, None),
        ("chair/221.png", str(image_root / "chair/221.png"), 7, "7", None, None),
        ("chair/222.png", str(image_root / "chair/222.png"), 7, "7", None, None),
    ]


def test_read_jsonl_merges_repeated_images(image_root):
    jsonl_path = write_jsonl(image_root / "pairs.jsonl", [
        pair("bicycle/111.jpg", "bicycle/112.jpg", 1001),
        pair("bicycle/111.jpg", "bicycle/113.jpg", 1001),
        pair("./bicycle//113.jpg", "bicycle/112.jpg", 1001),
        pair("chair/221.png", "chair/221.png", 7),
    ])

    table = read_jsonl(jsonl_path)

    assert table.get_column("image_id").to_list() == [
        "bicycle/111.jpg", "bicycle/112.jpg", "bicycle/113.jpg", "chair/221.png",
    ]
    assert table.get_column("label").to_list() == [1001, 1001, 1001, 7]


def test_read_jsonl_image_root_argument(tmp_path, image_root):
    jsonl_path = write_jsonl(tmp_path / "lists" / "pairs.jsonl", [pair("chair/221.png", "chair/222.png", 7)])

    table = read_jsonl(jsonl_path, image_root=image_root)

    assert table.get_column("path").to_list() == [
        str(image_root / "chair/221.png"), str(image_root / "chair/222.png"),
    ]


def test_read_jsonl_relative_root(tmp_path, image_root, monkeypatch):
    write_jsonl(image_root / "pairs.jsonl", [pair("chair/221.png", "chair/222.png", 7)])
    monkeypatch.chdir(tmp_path)

    table = read_jsonl(Path("images/pairs.jsonl"))

    assert table.get_column("path").to_list() == ["images/chair/221.png", "images/chair/222.png"]


def test_read_jsonl_blank_lines_and_extra_keys(image_root):
    line = json.dumps({"query_image": "chair/221.png", "positive": "chair/222.png", "label": 7, "note": "x"})
    jsonl_path = write_jsonl(image_root / "pairs.jsonl", ["", "   ", line, ""])

    table = read_jsonl(jsonl_path)

    assert table.height == 2


def test_read_jsonl_conflicting_labels(image_root):
    jsonl_path = write_jsonl(image_root / "pairs.jsonl", [
        pair("bicycle/111.jpg", "bicycle/112.jpg", 1001),
        "",
        pair("chair/221.png", "bicycle/112.jpg", 7),
    ])

    message = read_error(jsonl_path)

    assert "image 'bicycle/112.jpg' has label 1001 on line 1 but label 7 on line 3" in message
    assert str(jsonl_path) in message


def test_read_jsonl_missing_file(tmp_path):
    message = read_error(tmp_path / "pairs.jsonl")

    assert f"pair file {tmp_path / 'pairs.jsonl'} not found" in message


def test_read_jsonl_without_pairs(image_root):
    jsonl_path = write_jsonl(image_root / "pairs.jsonl", ["", " "])

    message = read_error(jsonl_path)

    assert f"{jsonl_path} contains no pairs" in message


def test_read_jsonl_invalid_json(image_root):
    jsonl_path = write_jsonl(image_root / "pairs.jsonl", [
        pair("chair/221.png", "chair/222.png", 7),
        '{"query_image": "chair/221.png",',
    ])

    message = read_error(jsonl_path)

    assert f"{jsonl_path} line 2: invalid JSON" in message


def test_read_jsonl_line_not_an_object(image_root):
    jsonl_path = write_jsonl(image_root / "pairs.jsonl", ['["chair/221.png", "chair/222.png", 7]'])

    message = read_error(jsonl_path)

    assert f"{jsonl_path} line 1: expected a JSON object" in message
    assert "found a JSON list" in message


def test_read_jsonl_missing_key(image_root):
    jsonl_path = write_jsonl(image_root / "pairs.jsonl", [
        pair("chair/221.png", "chair/222.png", 7),
        json.dumps({"query_image": "chair/221.png", "label": 7}),
    ])

    message = read_error(jsonl_path)

    assert f"{jsonl_path} line 2: the key(s) positive are missing" in message


@pytest.mark.parametrize("label", ["1001", 1001.0, 1.5, True, None, [1]])
def test_read_jsonl_non_integer_label(image_root, label):
    jsonl_path = write_jsonl(image_root / "pairs.jsonl", [pair("chair/221.png", "chair/222.png", label)])

    message = read_error(jsonl_path)

    assert f"{jsonl_path} line 1: label {json.dumps(label)} is not an integer" in message


def test_read_jsonl_label_outside_int64(image_root):
    jsonl_path = write_jsonl(image_root / "pairs.jsonl", [pair("chair/221.png", "chair/222.png", 2**63)])

    message = read_error(jsonl_path)

    assert f"{jsonl_path} line 1: label {2**63} does not fit" in message


@pytest.mark.parametrize("path", ["/images/chair/221.png", "C:\\images\\chair.png", "\\\\server\\share\\a.png"])
def test_read_jsonl_absolute_path(image_root, path):
    jsonl_path = write_jsonl(image_root / "pairs.jsonl", [
        pair("chair/221.png", "chair/222.png", 7),
        pair("chair/221.png", path, 7),
    ])

    message = read_error(jsonl_path)

    assert f"{jsonl_path} line 2: positive {path!r} is an absolute path" in message


@pytest.mark.parametrize("path", ["../chair/221.png", "chair/../../x.png", "chair\\..\\x.png"])
def test_read_jsonl_path_with_parent_part(image_root, path):
    jsonl_path = write_jsonl(image_root / "pairs.jsonl", [pair(path, "chair/222.png", 7)])

    message = read_error(jsonl_path)

    assert f"{jsonl_path} line 1: query_image {path!r} contains '..'" in message


@pytest.mark.parametrize("value", ["", 12, None])
def test_read_jsonl_image_not_a_path(image_root, value):
    jsonl_path = write_jsonl(image_root / "pairs.jsonl", [pair(value, "chair/222.png", 7)])

    message = read_error(jsonl_path)

    assert f"{jsonl_path} line 1: query_image must be a non-empty path string" in message


def test_read_jsonl_missing_images(image_root):
    lines = [pair("chair/221.png", "chair/222.png", 7)]
    lines += [pair(f"lamp/{index:02d}.jpg", "chair/221.png", 7) for index in range(12)]
    jsonl_path = write_jsonl(image_root / "pairs.jsonl", lines)

    message = read_error(jsonl_path)

    assert f"12 of 14 images named in {jsonl_path} are not found under {image_root}" in message
    assert "line 2: lamp/00.jpg" in message
    assert "line 11: lamp/09.jpg" in message
    assert "lamp/10.jpg" not in message
    assert "lamp/11.jpg" not in message
