"""``data/``: its sha256 manifest, the files it covers, and the download registry's pins agree."""

import re

import pytest
from conftest import DATA

from avisc_lib.benchmarks import download

UNLISTED = {"README.md", "LICENSE", "SHA256SUMS", ".gitattributes"}  # documentation, not data


def _manifest() -> dict[str, str]:
    """``SHA256SUMS`` as {path relative to data/: sha256}, in ``sha256sum`` format."""
    entries = {}
    for n, line in enumerate((DATA / "SHA256SUMS").read_text().splitlines(), start=1):
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](\S.*)", line)
        assert match, f"SHA256SUMS:{n}: not '<sha256>  <path>': {line!r}"
        assert match[2] not in entries, f"SHA256SUMS:{n}: {match[2]} listed twice"
        entries[match[2]] = match[1]
    return entries


def test_every_listed_file_exists_and_matches():
    manifest = _manifest()
    assert len(manifest) == 22
    for path, sha256 in manifest.items():
        assert (DATA / path).is_file(), f"{path} is listed in SHA256SUMS but missing"
        assert download.sha256sum(DATA / path) == sha256, path


def test_every_data_file_is_listed():
    files = {p.relative_to(DATA).as_posix() for p in DATA.rglob("*") if p.is_file() and p.name not in UNLISTED}
    assert files == set(_manifest())


def test_registry_pins_the_manifest():
    pinned = {entry.path: entry.sha256 for entry in download.FILES}
    manifest = _manifest()
    assert {path: pinned.get(path) for path in manifest} == manifest
    assert sorted(set(pinned) - set(manifest)) == ["MME/tools/eval_tool.zip"]  # MME is not redistributable


@pytest.mark.parametrize("source", ["POPE", "POPE_e3e3926", "AMBER"])
def test_each_source_has_its_licence_and_pinned_commit_in_the_readme(source):
    assert (DATA / source / "LICENSE").is_file()
    commit = download._SOURCES[source].rsplit("/", 1)[1]
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    assert commit in (DATA / "README.md").read_text()
