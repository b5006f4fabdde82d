"""``coco_val2014``: images on demand from a checksum-verified zip (a small zip at a file:// URL)."""

import zipfile

import pytest
from conftest import DATA

from avisc_lib.benchmarks import download, images
from avisc_lib.benchmarks.images import Archive, coco_val2014, pope_image_names
from avisc_lib.benchmarks.pope import load_questions

NAMES = [f"COCO_val2014_00000000000{i}.jpg" for i in range(3)]


@pytest.fixture
def archive(tmp_path):
    """A val2014-style zip of three 'images' and its registry entry."""
    path = tmp_path / "server" / "val2014.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        for i, name in enumerate(NAMES):
            zf.writestr(f"val2014/{name}", f"image {i}")
    return Archive(path.as_uri(), path.stat().st_size, download.sha256sum(path), "val2014")


def test_refuses_to_download_unless_asked(archive, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"2 image\(s\) missing.*download=True.*GB, sha256-checked"):
        coco_val2014(NAMES[:2], tmp_path / "coco", archive=archive)
    assert not (tmp_path / "coco").exists()


def test_downloads_verifies_and_extracts_only_the_needed_images(archive, tmp_path, monkeypatch, caplog):
    folder = coco_val2014(NAMES[:2], tmp_path / "coco", download=True, archive=archive)
    assert f"downloading {archive.url} (0.0 GB)" in caplog.text
    assert folder == tmp_path / "coco" / "val2014"
    assert sorted(p.name for p in folder.iterdir()) == NAMES[:2]
    assert (folder / NAMES[1]).read_text() == "image 1"

    def offline(*args, **kwargs):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    assert coco_val2014(NAMES[:2], tmp_path / "coco", archive=archive) == folder  # all present
    coco_val2014(NAMES, tmp_path / "coco", archive=archive)  # the kept zip serves a new image
    assert (folder / NAMES[2]).read_text() == "image 2"


def test_checksum_mismatch_keeps_nothing(archive, tmp_path):
    wrong = Archive(archive.url, archive.size, "0" * 64, archive.folder)
    with pytest.raises(download.ChecksumError, match="expected 0000"):
        coco_val2014(NAMES, tmp_path / "coco", download=True, archive=wrong)
    assert list((tmp_path / "coco").iterdir()) == []


def test_image_not_in_archive(archive, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) not in .*COCO_val2014_999.jpg"):
        coco_val2014(["COCO_val2014_999.jpg"], tmp_path / "coco", download=True, archive=archive)


def test_not_enough_disk_space(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(images.shutil, "disk_usage", lambda path: type("U", (), {"free": 10})())
    with pytest.raises(OSError, match="needs .* GB but .* has 0.0 GB free"):
        coco_val2014(NAMES, tmp_path / "coco", download=True, archive=archive)


def test_pope_image_names_from_the_real_files(tmp_path):
    coco = pope_image_names(["coco"], tmp_path)  # the repository's data/ answers; nothing is cached
    assert len(coco) == 500 and all(n.startswith("COCO_val2014_") for n in coco)
    assert coco == sorted({q.image for q in load_questions(DATA / "POPE/output/coco/coco_pope_random.json")})
    both = pope_image_names(["coco", "aokvqa"], tmp_path)
    assert set(coco) < set(both) and all(n.startswith("COCO_val2014_") for n in both)
    assert not any(tmp_path.iterdir())


def test_avisc_eval_download_images(tmp_path, monkeypatch):
    """``avisc-eval run pope --dataset coco --download-images``: the zip is fetched and the asked images extracted."""
    from functools import partial

    from conftest import scene_images

    from avisc_lib.benchmarks.cli import main

    monkeypatch.delenv("COCO_IMAGES", raising=False)
    questions = load_questions(DATA / "POPE/output/coco/coco_pope_random.json")[:2]
    names = sorted({q.image for q in questions})
    photos = scene_images(tmp_path / "photos", names)
    path = tmp_path / "server" / "val2014.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.write(photos / name, f"val2014/{name}")
    archive = Archive(path.as_uri(), path.stat().st_size, download.sha256sum(path), "val2014")
    monkeypatch.setattr(images, "coco_val2014", partial(coco_val2014, archive=archive))
    monkeypatch.setattr(images, "pope_image_names", lambda datasets, data_dir=None: names)
    run = [
        "run",
        "pope",
        "--model",
        "tiny",
        "--method",
        "greedy",
        "--dataset",
        "coco",
        "--split",
        "random",
        "--limit",
        "2",
        "--data-dir",
        str(tmp_path / "data"),
    ]
    assert main([*run, "--out", str(tmp_path / "refused")]) == 1  # not without the flag
    assert main([*run, "--out", str(tmp_path / "out"), "--download-images"]) == 0
    assert sorted(p.name for p in (tmp_path / "data" / "coco" / "val2014").iterdir()) == names
    assert (tmp_path / "out" / "metrics.json").is_file()
