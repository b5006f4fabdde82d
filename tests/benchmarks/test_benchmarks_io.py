"""The benchmarks' shared I/O: record readers, their errors, image checks and the data location."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from avisc_lib.benchmarks import io
from avisc_lib.benchmarks.tasks import Question

RECORDS = [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}]


def test_json_lines_and_arrays_give_the_same_records(tmp_path):
    lines = tmp_path / "r.jsonl"
    lines.write_bytes(b"\xef\xbb\xbf" + b"\r\n\r\n".join(json.dumps(r).encode() for r in RECORDS))
    array = tmp_path / "r.json"
    array.write_text(json.dumps(RECORDS, indent=2))
    from_lines, from_array = io.read_records(lines), io.read_records(array)
    assert [r for _, r in from_lines] == [r for _, r in from_array] == RECORDS
    assert [where for where, _ in from_lines] == [f"{lines}:1", f"{lines}:3"]  # blank line 2 skipped
    assert [where for where, _ in from_array] == [f"{array} record 1", f"{array} record 2"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"r\.json: no records"),
        ("\n\n", r"r\.json: no records"),
        ('{"id": 1}\n[1, 2]\n', r"r\.json:2: expected a JSON object, got list"),
        ('[{"id": 1}, "x"]', r"r\.json record 2: expected a JSON object, got str"),
        ('{"id": 1}\n{"id": \n', r"r\.json:2: invalid JSON line"),
    ],
)
def test_malformed_record_files_name_the_place(tmp_path, text, message):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(io.FormatError, match=message):
        io.read_records(path)


def test_read_json_and_require(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_bytes(b'\xef\xbb\xbf{"dog": ["puppy"]}')
    bad.write_text('{\n"dog": [\n}')
    assert io.read_json(good) == {"dog": ["puppy"]}
    with pytest.raises(io.FormatError, match=r"bad\.json:3: invalid JSON"):
        io.read_json(bad)
    io.require({"id": 1, "image": "x"}, "f:1", ("id", "image"))
    with pytest.raises(io.FormatError, match=r"^f:4: missing field\(s\) 'image', 'label'$"):
        io.require({"id": 1}, "f:4", ("id", "image", "label"))


def test_check_images_lists_what_is_missing(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    asked = [Question(i, name, "q", "yes", "g") for i, name in enumerate(["a.png", "b.png", "c.png", "b.png"])]
    io.check_images(asked[:1], tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^2 image\(s\) missing from .*, e\.g\. b\.png, c\.png$"):
        io.check_images(asked, tmp_path)
    with pytest.raises(FileNotFoundError, match="image folder .*nowhere does not exist"):
        io.check_images(asked[:1], tmp_path / "nowhere")


def test_open_image_gives_rgb(tmp_path):
    Image.new("L", (3, 2), color=7).save(tmp_path / "grey.png")
    image = io.open_image(tmp_path, "grey.png")
    assert image.mode == "RGB" and image.size == (3, 2) and image.getpixel((0, 0)) == (7, 7, 7)


def test_data_locations(tmp_path):
    checkout = Path(__file__).resolve().parents[2]
    assert checkout / "data" == io.REPOSITORY_DATA
    code = "from avisc_lib.benchmarks.tasks import DEFAULT_DATA_DIR; print(DEFAULT_DATA_DIR)"
    env = {**os.environ, "AVISC_DATA_DIR": str(tmp_path)}
    printed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert printed.stdout.strip() == str(tmp_path)
