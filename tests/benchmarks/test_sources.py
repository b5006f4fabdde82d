"""``available``: is a benchmark's data here? One line naming what to set when it is not."""

import huggingface_hub.constants
import pytest

from avisc_lib.benchmarks import available, mme
from avisc_lib.benchmarks.images import pope_image_names

VARIABLES = ("COCO_IMAGES", "GQA_IMAGES", "MME_DIR", "AMBER_IMAGES")


@pytest.fixture(autouse=True)
def nothing_here(tmp_path, monkeypatch):
    """No image variable set, an empty Hugging Face cache, and no hub."""
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("benchmark", ["pope", "mme", "amber"])
def test_synthetic_is_always_available(benchmark):
    assert available(benchmark, "synthetic")[0]


@pytest.mark.parametrize(
    "benchmark, dataset, names",
    [
        ("pope", "coco", ["COCO_IMAGES", "DOWNLOAD_COCO", "--download-images", "6.6 GB"]),
        ("pope", "aokvqa", ["COCO_IMAGES"]),
        ("pope", "gqa", ["GQA_IMAGES"]),
        ("mme", "official", ["MME_DIR", "lmms-lab/MME", "HF_HUB_OFFLINE"]),
        ("amber", "official", ["AMBER_IMAGES", "github.com/junyangwang0410/AMBER"]),
    ],
)
def test_missing_data_gives_one_line_naming_what_to_set(tmp_path, benchmark, dataset, names):
    ok, reason = available(benchmark, dataset, data_dir=tmp_path / "cache")
    assert not ok and "\n" not in reason
    for name in names:
        assert name in reason


@pytest.mark.parametrize(
    "benchmark, dataset, variable",
    [
        ("pope", "coco", "COCO_IMAGES"),
        ("pope", "gqa", "GQA_IMAGES"),
        ("mme", "official", "MME_DIR"),
        ("amber", "official", "AMBER_IMAGES"),
    ],
)
def test_a_variable_naming_a_folder_makes_it_available(tmp_path, monkeypatch, benchmark, dataset, variable):
    monkeypatch.setenv(variable, str(tmp_path / "absent"))
    ok, reason = available(benchmark, dataset)
    assert not ok and f"{variable}={tmp_path / 'absent'} is not a folder" in reason
    (tmp_path / "absent").mkdir()
    assert available(benchmark, dataset) == (
        True,
        f"{benchmark} {dataset}: images from {variable}={tmp_path / 'absent'}",
    )


def test_coco_download_extraction_or_zip(tmp_path):
    cache = tmp_path / "cache"
    assert available("pope", "coco", download=True, data_dir=cache)[0]
    folder = cache / "coco" / "val2014"
    folder.mkdir(parents=True)
    names = pope_image_names(["coco"])
    for name in names[:-1]:
        (folder / name).touch()
    assert not available("pope", "coco", data_dir=cache)[0]  # one image short
    (folder / names[-1]).touch()
    assert available("pope", "coco", data_dir=cache) == (True, f"pope coco: images from {folder}")
    (cache / "coco" / "val2014.zip").touch()
    assert not available("pope", "aokvqa", data_dir=tmp_path / "other")[0]
    assert "on first use" in available("pope", "aokvqa", data_dir=cache)[1]


def test_mme_from_the_hugging_face_cache(tmp_path):
    data = tmp_path / "hf" / "datasets--lmms-lab--MME" / "snapshots" / mme.HUB_REVISION / "data"
    data.mkdir(parents=True)
    (data / "test-00000-of-00004.parquet").touch()
    ok, reason = available("mme", "official")
    assert ok and "Hugging Face cache" in reason


def test_mme_hub_unreachable(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda *a, **k: (_ for _ in ()).throw(OSError("no")))
    ok, reason = available("mme", "official")
    assert not ok and "the hub did not answer: OSError" in reason


def test_mme_hub_reachable(monkeypatch):
    asked = []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, repo, **kw: asked.append((repo, kw)))
    ok, reason = available("mme", "official")
    assert ok and "from the Hugging Face hub" in reason
    assert asked == [("lmms-lab/MME", {"revision": mme.HUB_REVISION, "timeout": 5})]


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="unknown benchmark/dataset"):
        available("pope", "official")
