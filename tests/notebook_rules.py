"""A pytest plugin (``-p notebook_rules`` in pyproject.toml): nbmake executes every notebook, and
this adds the series' rule that students see no warnings.

An executed notebook fails when a cell's output shows a warning (a Python ``...Warning:`` line or a
logged ``WARNING``), unless the line matches :data:`UNAVOIDABLE`, each entry with its reason.
Every notebook item is marked ``notebooks`` (``make test-fast`` leaves them out).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from nbmake.nb_result import NotebookError, NotebookResult
from nbmake.nb_run import NotebookRun
from nbmake.pytest_items import NotebookFailedException, NotebookItem

WARNING = re.compile(r"^.*(\b[A-Z]\w*Warning\b|\bWARNING\b|\bwarn(ing)?:).*$", re.M)
# (pattern, why we cannot avoid it): empty today; add only what a library emits whatever we do.
UNAVOIDABLE: list[tuple[re.Pattern, str]] = []


def warnings_in(notebook) -> list[str]:
    """``"cell k: <line>"`` for every warning line in the text outputs of an executed ``notebook``."""
    found = []
    for k, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output["output_type"] == "stream" else ""
            text += "".join(output.get("data", {}).get("text/plain", ""))
            for match in WARNING.finditer(text):
                if not any(pattern.search(match.group(0)) for pattern, _ in UNAVOIDABLE):
                    found.append(f"cell {k}: {match.group(0).strip()}")
    return found


class CheckedNotebookItem(NotebookItem):
    """nbmake's item, failing also on warnings in the outputs."""

    def runtest(self):
        option = self.config.option
        run = NotebookRun(Path(self.config.rootdir) / self.filename, option.nbmake_timeout,
                          verbose=bool(option.verbose), kernel=option.nbmake_kernel)
        result = run.execute()
        if result.error is None and (found := warnings_in(result.nb)):
            summary = f"{len(found)} warning line(s) in the outputs"
            result = NotebookResult(result.nb, NotebookError(summary, "\n".join([summary, *found]), -1))
        if result.error is not None:
            raise NotebookFailedException(result)


def pytest_collection_modifyitems(items):
    for item in items:
        if type(item) is NotebookItem:
            item.__class__ = CheckedNotebookItem
            item.add_marker(pytest.mark.notebooks)
