"""The course outline: every notebook opens with it, its runtimes come from the plan, its terms and
equations exist, and scripts/syllabus.py keeps the notebooks and GLOSSARY.md current."""

import datetime
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import load_script

from avisc_lib.course import budget, experiments, profiles, syllabus

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# What issue 21 asks the glossary to define.
REQUIRED_TERMS = (
    "blind token",
    "plausibility cut",
    "acc+",
    "CHAIR",
    "Cover",
    "Hal",
    "Cog",
    "Q-Former",
    "KV cache",
    "sink token",
    "register",
)
REQUIRED_EQUATIONS = ("contrast", "cut", "blind", "vcd_noise", "m3id", "pai", "only")


def test_every_notebook_has_a_lesson_and_every_lesson_a_notebook():
    assert [p.name[:2] for p in NOTEBOOKS] == list(syllabus.LESSONS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_opens_with_its_current_outline(path):
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].source.lstrip().startswith("[![Open In Colab]")  # the title cell stays first
    assert cells[1].cell_type == "markdown" and cells[1].source == syllabus.header(path.name[:2]), (
        "outline out of date: python scripts/syllabus.py"
    )


def test_the_script_finds_everything_current():
    done = subprocess.run([sys.executable, "scripts/syllabus.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_glossary_and_equations_cover_what_the_course_needs():
    assert set(REQUIRED_TERMS) <= set(syllabus.GLOSSARY)
    assert set(REQUIRED_EQUATIONS) <= set(syllabus.EQUATIONS)
    used_terms = {t for lesson in syllabus.LESSONS.values() for t in lesson.terms}
    used_equations = {e for lesson in syllabus.LESSONS.values() for e in lesson.equations}
    assert used_terms <= set(syllabus.GLOSSARY) and used_equations == set(syllabus.EQUATIONS)
    for eq in syllabus.EQUATIONS.values():  # each cites a paper with a link
        assert "](https://arxiv.org/abs/" in eq.source or "McNemar" in eq.source, eq.name
    assert (ROOT / "GLOSSARY.md").read_text() == syllabus.glossary_markdown()


@pytest.mark.parametrize("notebook", ["04", "05", "06"])
def test_gpu_minutes_are_the_plan_the_notebook_prints(notebook):
    """The outline's T4 minutes are budget.plan's total for the runs a T4 profile makes there."""
    gpu = "T4"
    quantized = not budget.fits_fp16(gpu, "llava", profiles.GPU_BATCH_SIZE)
    limit = profiles.default_limit("llava", gpu, quantized)
    runs = experiments.notebook_runs(notebook, limit, "coco")
    table = budget.plan(runs, gpu, "llava", quantized=quantized, batch_size=profiles.GPU_BATCH_SIZE)
    assert syllabus.gpu_minutes(notebook, gpu) == pytest.approx(table.loc["total", "minutes"], abs=0.05)


def test_a_prefill_only_run_costs_no_decode_steps():
    gpu, model, weights = budget.GPUS["T4"], budget.MODELS["llava"], budget.QUANTIZATION["fp16"]
    one = budget.run_seconds(budget.Run("pope", "greedy", 8, steps=1), gpu, model, weights, 8)
    prompt = model.image_tokens + budget.PROMPT_TEXT_TOKENS
    prefill = budget.forward_seconds(gpu, model, weights, 8, prompt, 0)
    assert prefill < one < 2 * prefill + 1  # a prefill and a vision pass, no steps
    longer = budget.run_seconds(budget.Run("pope", "greedy", 8, steps=12), gpu, model, weights, 8)
    assert longer == pytest.approx(budget.run_seconds(budget.Run("pope", "greedy", 8), gpu, model, weights, 8))
    with pytest.raises(ValueError, match="steps >= 1"):
        budget.Run("pope", "greedy", 8, steps=0)


def test_runtimes_cover_every_notebook_and_grow_with_the_work():
    table = syllabus.runtimes()
    assert list(table.index) == list(syllabus.LESSONS) and table.notna().all().all()
    assert (table["T4"] >= table["A100-40GB"]).all()  # the slower GPU never plans faster
    assert table.loc["06", "T4"] > table.loc["01", "T4"]  # a benchmark notebook outweighs a study
    measured = syllabus.cpu_minutes()
    assert set(measured) == set(syllabus.LESSONS) and all(m > 0 for m in measured.values())


def test_executed_minutes_read_the_cell_timestamps(tmp_path):
    script = load_script("syllabus", "syllabus_script")
    notebook = nbformat.v4.new_notebook()
    start = datetime.datetime(2026, 1, 1, 12, 0, 0)
    for k in range(3):
        cell = nbformat.v4.new_code_cell("pass")
        cell.metadata["execution"] = {
            "iopub.execute_input": (start + datetime.timedelta(minutes=k)).isoformat() + "Z",
            "shell.execute_reply": (start + datetime.timedelta(minutes=k, seconds=30)).isoformat() + "Z",
        }
        notebook.cells.append(cell)
    path = tmp_path / "01_x.ipynb"
    nbformat.write(notebook, path)
    assert script.executed_minutes(path) == pytest.approx(2.5)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("pass")]), path)
    with pytest.raises(ValueError, match="no execution timestamps"):
        script.executed_minutes(path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_has_equations_and_a_checked_exercise_with_a_hidden_solution(path):
    from avisc_lib.course import check

    assert syllabus.LESSONS[path.name[:2]].equations
    cells = nbformat.read(path, as_version=4).cells
    solutions = [c for c in cells if "solution" in c.metadata.get("tags", [])]
    assert solutions and all(c.metadata["jupyter"]["source_hidden"] for c in solutions)
    for cell in solutions:  # each solution runs a check of course.check that exists
        called = [name for name in dir(check) if f"check.{name}(" in cell.source]
        assert called, cell.source[:80]
