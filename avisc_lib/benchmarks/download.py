"""The real benchmark files, pinned by commit and sha256, and :func:`fetch` to find or download them.

``fetch("pope/coco/adversarial", cache_dir)`` returns the path of a file whose sha256 matches the
pinned one. From a checkout of the repository, the copy in its top-level ``data/`` folder (beside
``avisc_lib/``: POPE's question files and AMBER's annotations, queries and vocabulary, which their
licences let us redistribute) is used, so nothing is downloaded; a copy that does not match its pin
is an error, never silently replaced. Otherwise (an installed package, or a file that ``data/`` does
not hold, such as MME's evaluation tool) the file is downloaded once into ``cache_dir``, which is
laid out as ``data/`` is: as the source repositories (``POPE/output/coco/...``, ``AMBER/data/...``,
``MME/tools/eval_tool.zip``). The AMBER files land side by side, as :meth:`.amber.Vocabulary.beside`
expects.
"""

from __future__ import annotations

import hashlib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .io import REPOSITORY_DATA

_RAW = "https://raw.githubusercontent.com"
_SOURCES = {  # cache folder → pinned raw-file prefix of its repository
    "POPE": f"{_RAW}/RUCAIBox/POPE/3df3ba1b110ecce25696989577fad583b67d4239",
    "POPE_e3e3926": f"{_RAW}/RUCAIBox/POPE/e3e39262c85a6a83f26cf5094022a782cb0df58d",
    "AMBER": f"{_RAW}/junyangwang0410/AMBER/534babf6bbfcce2e735c26289dedfb21cef3c939",
    "MME": f"{_RAW}/BradyFU/Awesome-Multimodal-Large-Language-Models/dd2950902889cd614d4edf606827240166d29381",
}


@dataclass(frozen=True)
class BenchmarkFile:
    name: str
    path: str  # relative to the cache folder; its first part names the source
    sha256: str

    @property
    def url(self) -> str:
        source, rest = self.path.split("/", 1)
        return f"{_SOURCES[source]}/{rest}"


def _pope(folder: str, dataset: str, split: str, sha256: str) -> BenchmarkFile:
    subdir = "coco/coco_pope" if dataset == "coco" else f"seem/{dataset}/{dataset}_pope_seem"
    name = "pope" if folder == "POPE" else "pope-e3e3926"
    return BenchmarkFile(f"{name}/{dataset}/{split}", f"{folder}/output/{subdir}_{split}.json", sha256)


def _amber(name: str, path: str, sha256: str) -> BenchmarkFile:
    return BenchmarkFile(f"amber/{name}", f"AMBER/data/{path}", sha256)


FILES = (
    _pope("POPE", "coco", "random", "ac25245170b975a5bdf9080b23fd431dfe6be458bc038259c1f4f09a6bef7994"),
    _pope("POPE", "coco", "popular", "72c1a8ad45d0c13514f5f22598261df41d3b533854d29682e924db50ed8aa753"),
    _pope("POPE", "coco", "adversarial", "420b3407db1fa9f1187a805dca41cb7b97fd91504e6c2179706188c107fb8ef8"),
    _pope("POPE", "aokvqa", "random", "f06eecde6d6ef4a00b95a7bbb510490708a09a6a67d952b59b8bdd33ac2c7200"),
    _pope("POPE", "aokvqa", "popular", "2ae5bedee3450cda52f9b033942c7b04a3917a86a110e859a66c1e41934c6ffd"),
    _pope("POPE", "aokvqa", "adversarial", "2ddd3bdfa0df7a77a2cb1765ed06ac5ed190b5a093aa405b96986e862e8cdac1"),
    _pope("POPE", "gqa", "random", "6ce488eade3770185034939fabfe742fa32ed369011c8d9c3ac77bc0c85abd94"),
    _pope("POPE", "gqa", "popular", "dd03f06a458dd216e83233160fbf6628af9c63c84b11e99599f4fc0304b3361d"),
    _pope("POPE", "gqa", "adversarial", "74e01b41d8308e2392e3b8d961167496ff3901c01100265d931a7a392f138a7a"),
    # the LLaVA-1.5 era COCO files (random has 2910 questions)
    _pope("POPE_e3e3926", "coco", "random", "c16b65d2df6d70bb0814c8a4375833d39cdb09928fd936d3fc546491efa37f35"),
    _pope("POPE_e3e3926", "coco", "popular", "5b16653023bf4f64d57eb0d168259de6627f5cde7538b85ebed3cc33034aa6cc"),
    _pope(
        "POPE_e3e3926",
        "coco",
        "adversarial",
        "1d8f0906a9b50c05640f6f23abfac97523be2a1bed28f7eadc63b811699b2d26",
    ),
    _amber("annotations", "annotations.json", "db22a436c4836fbb295e60b4e80d519573077579fb7032f01b193c1bd022b797"),
    _amber("relation", "relation.json", "c4c1491e9bbc3209abc1888c12a1bf8413bdbab8a0d8be04b990a2e7680cf23e"),
    _amber("safe_words", "safe_words.txt", "f92cf1123f4578a2630832fac3e6ac4de36212ea55859d3bed4fd233723f4043"),
    _amber("metrics", "metrics.txt", "2fbe2ee584d10e7ce0a568a4902d3d2296727d45f761bf091dd35c4e4b5bc6ac"),
    _amber(
        "query/all",
        "query/query_all.json",
        "127680ae61f7d4a92d2f7f07a8deaec07f0689b194d2c7c0f41ead7bd2c5bcf5",
    ),
    _amber(
        "query/generative",
        "query/query_generative.json",
        "b7e4c36596126ee36d2c3922638b7fa98743c26efda78fea2315f4425258d087",
    ),
    _amber(
        "query/discriminative",
        "query/query_discriminative.json",
        "1502887ac020f4bb7ea564af4e37bddcb030d61b78490d00f9da492a2307abb8",
    ),
    _amber(
        "query/attribute",
        "query/query_discriminative-attribute.json",
        "35c0fe71290789c5eb198e9a3f5732533bcb35f1d963b57539aab5d1b41dd827",
    ),
    _amber(
        "query/existence",
        "query/query_discriminative-existence.json",
        "657cce3b3ccd02303998d7d27d1ce06bd210a7a55aa6c888b1b86d5a9dfd9849",
    ),
    _amber(
        "query/relation",
        "query/query_discriminative-relation.json",
        "36e08860653a1562acb657c250604c3d4e26f8a5f99a376fd53c67f9242be20f",
    ),
    # MME's answer-sheet templates and the LaVIN example (questions + ground truth, no images)
    BenchmarkFile(
        "mme/eval_tool",
        "MME/tools/eval_tool.zip",
        "b8125e2a7c3418e5761c12b3cfe4f1624b3c53ba44009e75b7d3f797d3d8acee",
    ),
)
REGISTRY = {f.name: f for f in FILES}


class ChecksumError(RuntimeError):
    """A benchmark file's sha256 differs from the pinned one."""


def sha256sum(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def get_file(name: str) -> BenchmarkFile:
    """The registry entry ``name``; a clear error lists the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown benchmark file {name!r}; known: {', '.join(REGISTRY)}") from None


def fetch(name: str, cache_dir: str | Path, timeout: float = 60) -> Path:
    """Path of the verified file ``name``: the repository's copy in ``data/`` when there is one,
    else the copy in ``cache_dir``, downloading it if needed."""
    entry = get_file(name)
    if (bundled := _repository_copy(entry)) is not None:
        return bundled
    target = Path(cache_dir) / entry.path
    if target.is_file() and sha256sum(target) == entry.sha256:
        return target
    download_verified(entry.url, target, entry.sha256, label=name, timeout=timeout)
    return target


def _repository_copy(entry: BenchmarkFile) -> Path | None:
    """``entry``'s file in the checkout's ``data/`` after checking its sha256; None if absent."""
    path = REPOSITORY_DATA / entry.path
    if not path.is_file():
        return None
    if (found := sha256sum(path)) != entry.sha256:
        raise ChecksumError(f"{entry.name}: {path} has sha256 {found}, expected {entry.sha256} (restore it with git)")
    return path


def download_verified(
    url: str, target: Path, sha256: str, *, label: str, size: int | None = None, timeout: float = 60
) -> None:
    """Stream ``url`` to ``target`` through ``target.part``, hashing as it goes; keep it only if its
    sha256 matches. ``size`` (bytes), when known, shows a progress bar."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        try:
            with (
                urllib.request.urlopen(url, timeout=timeout) as response,
                open(partial, "wb") as out,
                tqdm(total=size, unit="B", unit_scale=True, desc=label, disable=size is None) as bar,
            ):
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        except OSError as e:  # URLError is an OSError
            raise OSError(f"could not download {label} from {url}: {e}") from e
        if digest.hexdigest() != sha256:
            raise ChecksumError(f"{label} from {url}: sha256 {digest.hexdigest()}, expected {sha256}")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
