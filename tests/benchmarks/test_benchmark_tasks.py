"""``build_task``: limits, and the real datasets (pinned files + an image folder) on tiny fixture files."""

import json
import urllib.error
from pathlib import Path

import pytest
from conftest import scene_images
from mme_parquet import parquet_from_release

from avisc_lib.benchmarks import download, mme, runner
from avisc_lib.benchmarks.tasks import build_task


@pytest.fixture(autouse=True)
def no_image_variables(monkeypatch):
    for variable in ("COCO_IMAGES", "GQA_IMAGES", "MME_DIR", "AMBER_IMAGES"):
        monkeypatch.delenv(variable, raising=False)


def _pin(monkeypatch, data_dir: Path, name: str, text: str) -> None:
    """Put ``text`` where ``fetch(name, data_dir)`` looks, and pin the registry entry to it."""
    monkeypatch.setattr(download, "REPOSITORY_DATA", data_dir / "no-checkout")  # as an installed package
    entry = download.get_file(name)
    path = data_dir / entry.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    pinned = download.BenchmarkFile(name, entry.path, download.sha256sum(path))
    monkeypatch.setitem(download.REGISTRY, name, pinned)


# --------------------------------------------------------------------------- limits


def test_limits():
    assert len(build_task("pope", limit=7).questions) == 7
    groups = [q.group for q in build_task("mme", limit=3).questions]  # rounded up to whole pairs
    assert groups == [g for g in ("existence", "count", "position", "color") for _ in range(4)]
    amber = build_task("amber", limit=2).questions
    sections = ("generative", "attribute", "existence", "relation")
    assert [q.group for q in amber] == [section for section in sections for _ in range(2)]
    existence = build_task("amber", "synthetic", "existence", limit=5).questions
    assert [q.group for q in existence] == ["existence"] * 5
    assert build_task("amber", "synthetic", "discriminative").scoring == {"parser": "normalised"}


def test_synthetic_mme_is_the_hallucination_subset():
    with pytest.raises(ValueError, match="only the hallucination subtasks"):
        build_task("mme", "synthetic", "all")


# --------------------------------------------------------------------------- POPE


@pytest.fixture
def coco(tmp_path, monkeypatch):
    records = [
        {"question_id": i + 1, "image": f"COCO_val2014_00000000000{i // 2}.jpg", "text": t, "label": label}
        for i, (t, label) in enumerate(
            [("Is there a red circle in the image?", "yes"), ("Is there a blue square in the image?", "no")] * 2
        )
    ]
    data = tmp_path / "cache"
    _pin(monkeypatch, data, "pope/coco/adversarial", "\r\n".join(json.dumps(r) for r in records) + "\r\n")
    return data, sorted({r["image"] for r in records})


def test_pope_coco_from_pinned_file_and_image_folder(coco, tmp_path):
    data, images = coco
    folder = scene_images(tmp_path / "val2014", images)
    task = build_task("pope", "coco", "adversarial", data_dir=data, image_dir=folder)
    assert [q.id for q in task.questions] == [1, 2, 3, 4] and task.questions[0].image == images[0]
    assert task.load_image(images[1]).size == (64, 64)
    metrics = runner.run_benchmark(
        "pope", model_name="tiny", method="greedy", dataset="coco", split="adversarial",
        data_dir=data, image_dir=folder, out_dir=tmp_path / "out",
    )  # fmt: skip
    assert metrics["TP"] + metrics["FP"] + metrics["TN"] + metrics["FN"] == 4


def test_pope_missingscene_images(coco, tmp_path):
    data, images = coco
    folder = scene_images(tmp_path / "val2014", images[:1])
    with pytest.raises(FileNotFoundError, match=rf"1 image\(s\) missing from {folder}, e.g. {images[1]}"):
        build_task("pope", "coco", "adversarial", data_dir=data, image_dir=folder)
    limited = build_task("pope", "coco", "adversarial", data_dir=data, image_dir=folder, limit=2)
    assert len(limited.questions) == 2
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_task("pope", "coco", "adversarial", data_dir=data, image_dir=tmp_path / "nowhere")


def test_pope_images_from_the_environment_or_the_coco_cache(coco, tmp_path, monkeypatch):
    data, images = coco
    with pytest.raises(ValueError, match="needs image_dir .*COCO_IMAGES: an extracted COCO val2014 folder"):
        build_task("pope", "coco", "adversarial", data_dir=data)
    folder = scene_images(tmp_path / "val2014", images)
    monkeypatch.setenv("COCO_IMAGES", str(folder))
    assert build_task("pope", "coco", "adversarial", data_dir=data).load_image(images[0]).size == (64, 64)
    monkeypatch.delenv("COCO_IMAGES")
    names = [f"COCO_val2014_{i:012d}.jpg" for i in range(2)]  # what pope_image_names reads from the pinned files
    monkeypatch.setattr("avisc_lib.benchmarks.images.pope_image_names", lambda datasets, data_dir=None: names)
    scene_images(data / "coco" / "val2014", names)  # extracted by an earlier download
    assert build_task("pope", "coco", "adversarial", data_dir=data).load_image(images[1]).size == (64, 64)


def test_pope_file_not_downloadable(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    monkeypatch.setattr(download, "REPOSITORY_DATA", tmp_path / "no-checkout")  # as an installed package
    with pytest.raises(OSError, match="could not download pope/gqa/random"):
        build_task("pope", "gqa", "random", data_dir=tmp_path, image_dir=tmp_path)


# --------------------------------------------------------------------------- MME


def _mme_release(root: Path) -> Path:
    """Two layouts, as in the release: question files beside the images, or in questions_answers_YN/."""
    questions = {
        "existence": "Is there a red circle in this image? Please answer yes or no.\tYes\n"
        "Is there a green square in this image? Please answer yes or no.\tNo\n",
        "count": "Are there two objects in the image?\tYes\nAre there three objects in the image?\tNo\n",
        "position": "Is the red circle above the blue square?\tYes\nIs the red circle below the blue square?\tNo\n",
        "color": "Is the circle red?\tYes\nIs the circle blue?\tNo\n",
    }
    for subtask, text in questions.items():
        folder = root / subtask
        if subtask == "color":
            scene_images(folder / "images", ["000000000001.jpg"])
            (folder / "questions_answers_YN").mkdir()
            (folder / "questions_answers_YN" / "000000000001.txt").write_text(text)
        else:
            scene_images(folder, ["000000000001.jpg"])
            (folder / "000000000001.txt").write_text(text)
    return root


def test_mme_release_folder(tmp_path):
    root = _mme_release(tmp_path / "MME_Benchmark_release_version")
    task = build_task("mme", "official", image_dir=root)
    assert [q.image for q in task.questions[::2]] == [
        "existence/000000000001.jpg", "count/000000000001.jpg", "position/000000000001.jpg",
        "color/images/000000000001.jpg",
    ]  # fmt: skip
    assert [q.label for q in task.questions] == ["yes", "no"] * 4
    assert task.load_image(task.questions[-1].image).size == (64, 64)
    perfect = task.score({q.id: q.label.title() for q in task.questions})
    assert perfect["hallucination"] == 800
    with pytest.raises(FileNotFoundError, match="posters does not exist"):
        build_task("mme", "official", "all", image_dir=root)


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


def test_mme_parquet_dataset_equals_the_release_folder(tmp_path, monkeypatch, offline_datasets):
    root = _mme_release(tmp_path / "release")
    monkeypatch.setenv("MME_DIR", str(parquet_from_release(root, tmp_path / "parquet", mme.HALLUCINATION)))
    hub, release = build_task("mme", "official"), build_task("mme", "official", image_dir=root)
    assert [(q.text, q.label, q.group) for q in hub.questions] == [
        (q.text, q.label, q.group) for q in release.questions
    ]
    assert hub.questions[-1].image == "color/000000000001.jpg" and hub.data == release.data == {}
    assert (
        hub.load_image(hub.questions[-1].image).tobytes() == release.load_image(release.questions[-1].image).tobytes()
    )
    answers = {q.id: ("Yes", "no", "Nope", "There is")[q.id % 4] for q in hub.questions}
    assert hub.score(answers) == release.score(answers)
    # existence and position: the "no" question right, so acc 1/2, acc+ 0 (50 points); count and color: none right
    assert hub.score(answers)["hallucination"] == 100.0


def test_mme_from_the_pinned_hub_dataset_is_recorded(tmp_path, monkeypatch, offline_datasets):
    import datasets

    local = parquet_from_release(_mme_release(tmp_path / "release"), tmp_path / "parquet", mme.HALLUCINATION)
    real_load, calls = datasets.load_dataset, []

    def load_dataset(path, **kwargs):  # the hub, as the cache would serve it
        calls.append((path, kwargs.get("revision")))
        return real_load(str(local), split="test")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    metrics = runner.run_benchmark(
        "mme", model_name="tiny", method="greedy", dataset="official", limit=2, out_dir=tmp_path / "out"
    )
    assert calls == [("lmms-lab/MME", mme.HUB_REVISION)]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["data"] == {"dataset": "lmms-lab/MME", "revision": mme.HUB_REVISION}
    assert metrics["hallucination"] is not None


def test_mme_release_missing_image(tmp_path):
    root = _mme_release(tmp_path / "release")
    (root / "count" / "000000000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="no image for"):
        build_task("mme", "official", image_dir=root)


# --------------------------------------------------------------------------- AMBER


@pytest.fixture
def amber_files(tmp_path, monkeypatch):
    data = tmp_path / "cache"
    annotations = [
        {"id": 1, "type": "generative", "truth": ["dog", "grass"], "hallu": ["cat"]},
        {"id": 2, "type": "discriminative-hallucination", "truth": "no"},
        {"id": 3, "type": "discriminative-attribute-state", "truth": "yes"},
        {"id": 4, "type": "relation", "truth": "no"},
    ]
    queries = [
        {"id": 1, "image": "AMBER_1.jpg", "query": "Describe this image."},
        {"id": 2, "image": "AMBER_1.jpg", "query": "Is there a cat in this image?"},
        {"id": 3, "image": "AMBER_2.jpg", "query": "Is the dog brown in this image?"},
        {"id": 4, "image": "AMBER_2.jpg", "query": "Is there direct contact between the dog and grass?"},
    ]
    _pin(monkeypatch, data, "amber/annotations", json.dumps(annotations))
    _pin(monkeypatch, data, "amber/query/all", json.dumps(queries))
    relation = {"dog": ["puppy"], "grass": [], "cat": [], "car": []}
    _pin(monkeypatch, data, "amber/relation", json.dumps(relation))
    _pin(monkeypatch, data, "amber/safe_words", "orange\n")
    return data, scene_images(tmp_path / "amber_images", ["AMBER_1.jpg", "AMBER_2.jpg"])


def test_amber_official_files(amber_files):
    data, images = amber_files
    task = build_task("amber", "official", data_dir=data, image_dir=images)
    assert [(q.id, q.group, q.label) for q in task.questions] == [
        (1, "generative", "dog, grass"),
        (2, "existence", "no"),
        (3, "attribute", "yes"),
        (4, "relation", "no"),
    ]
    result = task.score({1: "A puppy and a cat near a car.", 2: "No", 3: "yes.", 4: "No"})
    assert result["discriminative"]["overall"]["accuracy"] == 100.0  # the "normalised" parser reads "yes."
    # puppy covers dog (an association word); cat (a hallu object) and car are hallucinated
    expected = {"chair": pytest.approx(200 / 3), "cover": 50.0, "hal": 100.0, "cog": 100.0}
    assert result["generative"] == expected
    discriminative = build_task("amber", "official", "discriminative", data_dir=data, image_dir=images)
    assert [q.id for q in discriminative.questions] == [2, 3, 4] and "generative" not in discriminative.score(
        {2: "No", 3: "Yes", 4: "Yes"}
    )


def test_amber_images_from_the_environment(amber_files, monkeypatch):
    data, images = amber_files
    with pytest.raises(ValueError, match="needs image_dir .*AMBER_IMAGES: .*github.com/junyangwang0410/AMBER"):
        build_task("amber", "official", data_dir=data)
    monkeypatch.setenv("AMBER_IMAGES", str(images))
    assert len(build_task("amber", "official", data_dir=data).questions) == 4


def test_amber_missingscene_images(amber_files):
    data, images = amber_files
    (images / "AMBER_2.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="AMBER_2.jpg"):
        build_task("amber", "official", data_dir=data, image_dir=images)
    assert len(build_task("amber", "official", "generative", data_dir=data, image_dir=images).questions) == 1
