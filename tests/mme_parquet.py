"""MME in the layout of the ``lmms-lab/MME`` dataset, written from a release folder for offline tests."""

import random
from pathlib import Path

import datasets

from avisc_lib.benchmarks.mme import load_release, release_image_path

FEATURES = datasets.Features(
    {
        "question_id": datasets.Value("string"),
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "category": datasets.Value("string"),
    }
)


def parquet_from_release(release: Path, folder: Path, subtasks, *, shuffle_seed: int = 0) -> Path:
    """``folder/data/test-00000-of-00001.parquet`` holding the questions of ``subtasks`` of ``release``,
    images embedded, image by image in shuffled order (an image's two questions stay in order)."""
    by_image = [
        (subtask, [item for item in items if item.image == image])
        for subtask, items in load_release(release, subtasks).items()
        for image in dict.fromkeys(item.image for item in items)
    ]
    random.Random(shuffle_seed).shuffle(by_image)
    rows = {name: [] for name in FEATURES}
    for subtask, items in by_image:
        path = release_image_path(release, subtask, items[0].image)
        for item in items:
            rows["question_id"].append(f"{subtask}/{item.image}")
            rows["image"].append({"bytes": path.read_bytes(), "path": item.image})
            rows["question"].append(item.question)
            rows["answer"].append(item.gt.title())
            rows["category"].append(subtask)
    target = folder / "data" / "test-00000-of-00001.parquet"
    target.parent.mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=FEATURES).to_parquet(target)
    return folder
