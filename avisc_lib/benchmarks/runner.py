"""Run a benchmark end to end: resumable, sharded across processes, scored with the official rules.

    metrics = run_benchmark("pope", model_name="tiny", method="avisc", split="adversarial", out_dir="runs/a")

A named protocol (:mod:`.protocols`: ``"argmax"``, the default, ``"paper"`` or ``"official"``)
sets the question form, prompt style, parser and decode options; values passed explicitly
override all but the question form. ``config.json`` records each, and how tokens were chosen
(``"decoding"``: ``"argmax"`` or ``"sampling"``).

Questions (:mod:`.tasks`) are cut into global batches of ``batch_size`` consecutive questions;
batch k is decoded with seed ``seed + k`` (as :func:`avisc_lib.generate` numbers its batches).
The batches still unanswered in ``out_dir`` (:mod:`.store`) are split between the processes
of an ``accelerate launch`` (contiguous shares, :meth:`PartialState.split_between_processes`),
so the answers, and therefore the metrics, do not depend on the number of processes or on
where a killed run was resumed. (One exception: a batch torn by a kill mid-write is redone
for its missing questions only, as a smaller batch; with sampling those can differ.) The main
process then merges the answers in question order, scores them and writes ``metrics.json``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from PIL import Image
from tqdm.auto import tqdm
from transformers import PreTrainedModel, ProcessorMixin

from ..decoding import METHODS
from ..generation import generate
from ..models.batching import batches
from ..models.loading import load_model, weights_hash
from ..settings import DecodeSettings, decode_options
from ..version import __version__
from .protocols import question_form, resolve_protocol
from .store import RunFolder
from .tasks import Question, Task, build_task


# Decode options a run takes: every ``DecodeSettings`` field but ``seed``, which the run derives per batch.
def decode_option_names() -> tuple[str, ...]:
    """Decode options a run takes: every ``DecodeSettings`` option but ``seed``, which the run derives per batch."""
    return tuple(o.name for o in decode_options() if o.name != "seed")


Batch = tuple[int, list[Question]]  # (global batch index, its unanswered questions)


def partial_state() -> PartialState:
    """The process state of a (possibly ``accelerate launch``-ed) run: CPU unless CUDA is there and wanted.

    ``PartialState`` is shared by the process: the first construction decides it, so every caller
    (the CLI too) must build it the same way, or a CPU launch of N processes runs N single ones.
    """
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def run_benchmark(
    benchmark: str,
    *,
    model_name: str,
    method: str,
    out_dir: str | Path,
    dataset: str = "synthetic",
    split: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    protocol: str = "argmax",
    parser: str | None = None,
    prompt_style: str | None = None,
    image_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    model=None,
    processor=None,
    load_options: dict | None = None,
    question_seed: int | None = None,
    progress: bool = True,
    **decode_options,
) -> dict:
    """Answer every question of the task (see :func:`.tasks.build_task`), score, return the metrics.

    Writes ``out_dir/{config.json, answers.jsonl, metrics.json}`` (see :mod:`.store`). Rerunning
    the same call resumes: answers already in ``out_dir`` are kept, only missing ones computed.
    ``method``: a name in :data:`avisc_lib.decoding.METHODS`. ``decode_options``: any field of
    :class:`avisc_lib.settings.DecodeSettings` but ``seed`` (:func:`decode_option_names`); they go to
    :func:`avisc_lib.decode`.

    ``protocol`` (:mod:`.protocols`): ``"argmax"`` keeps the library defaults for whatever is
    omitted; ``"paper"`` fills in the paper's question form, prompt style, parser and decode
    options for the model's kind; ``"official"`` the method's own released evaluation of the
    benchmark (``ValueError`` where none is sourced). Explicit ``parser``, ``prompt_style`` and
    decode options win over the protocol's. ``config.json`` records the protocol and the
    resolved values, the question form and how tokens were chosen, so a folder refuses to
    resume under another protocol. A decode option the method cannot honour (``do_sample=True``
    with ``greedy``, ``False`` with ``sample``) raises ``ValueError`` before anything runs.

    ``model``/``processor``: an already loaded pair (a notebook's), used instead of loading
    ``model_name``, which is still what ``config.json`` records. ``question_seed`` (default:
    ``seed``) draws the synthetic questions; set it to vary only the decoding seed, as the paper's
    repeated runs do (it is then recorded in the configuration too). ``load_options``: ``dtype`` and
    ``quantization`` for ``load_model`` (:func:`avisc_lib.models.placement.load_options`), recorded as ``"load"``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} for a benchmark run; expected one of {METHODS}")
    unknown = sorted(set(decode_options) - set(decode_option_names()))
    if unknown:
        raise ValueError(f"unknown decode option(s) {', '.join(unknown)}; expected some of {decode_option_names()}")
    _require_int("batch_size", batch_size, minimum=1)
    _require_int("seed", seed)
    chosen = resolve_protocol(protocol, method=method, benchmark=benchmark, model_name=model_name, model=model)
    decode_options = {**chosen.decode, **decode_options}
    parser = chosen.parser if parser is None else parser
    prompt_style = chosen.prompt_style if prompt_style is None else prompt_style
    settings = DecodeSettings(method=method, seed=seed, **decode_options)  # validates every value
    where = {"image_dir": image_dir, "data_dir": data_dir}
    questions_from = seed if question_seed is None else question_seed
    task = build_task(benchmark, dataset, split, seed=questions_from, limit=limit, parser=parser, **where)
    weights = weights_hash(model if model is not None else model_name)
    config = run_config(
        task, str(model_name), settings, limit, batch_size, prompt_style, protocol, weights, chosen.question
    )
    if question_seed is not None:
        config["question_seed"] = question_seed
    if load_options:
        config["load"] = {k: v if v is None else str(v).removeprefix("torch.") for k, v in load_options.items()}
    state = partial_state()
    folder = RunFolder(out_dir)
    folder.check_config(config)  # every process, before any waits on another
    if state.is_main_process:
        folder.write_config(config)
        folder.repair()
    state.wait_for_everyone()
    todo = pending_batches(task.questions, set(folder.read(task.questions)), batch_size)
    if state.is_main_process:
        count, total = sum(len(batch) for _, batch in todo), len(task.questions)
        processes = f"{state.num_processes} process(es)"
        print(f"avisc-eval: {count} of {total} questions to answer on {processes}", file=sys.stderr)
    with state.split_between_processes(todo) as mine:
        if mine:
            if model is None:
                model, processor = load_model(model_name, device=state.device, **(load_options or {}))
            decoder = Decoder(model, processor, method, prompt_style, decode_options, question_form(chosen.question))
            answer_batches(task, mine, decoder, folder, state.process_index, seed, progress and state.is_main_process)
    state.wait_for_everyone()
    if state.is_main_process:
        records = folder.merge(task.questions)
        folder.write_metrics(task.score_with_intervals({r["id"]: r["answer"] for r in records}))
    state.wait_for_everyone()
    return folder.read_metrics()


def _require_int(name: str, value, minimum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be an int{bound}, got {value!r}")


def run_config(
    task: Task,
    model_name: str,
    settings: DecodeSettings,
    limit: int | None,
    batch_size: int,
    prompt_style: str | None,
    protocol: str,
    weights: str,
    question: str | None = None,
) -> dict:
    """Everything that decides the answers and metrics of a run (the decode options its method
    reads, resolved; how tokens were chosen; the question form, :data:`.protocols.QUESTION_FORMS`
    or None), and where they come from: the package version and ``weights``
    (:func:`avisc_lib.models.loading.weights_hash`)."""

    decode = {name: value for name, value in settings.used_options().items() if name in decode_option_names()}
    return {
        "benchmark": task.benchmark,
        "dataset": task.dataset,
        "split": task.split,
        "limit": limit,
        "model": str(model_name),
        "weights": weights,
        "version": __version__,
        "protocol": protocol,
        "method": settings.method,
        "seed": settings.seed,
        "batch_size": batch_size,
        "prompt_style": prompt_style,
        "question_form": question,
        "decoding": settings.decoding,
        "decode": decode,
        "scoring": task.scoring,
        **({"data": task.data} if task.data else {}),  # a pinned dataset's revision (MME from lmms-lab/MME)
    }


def pending_batches(questions: Sequence[Question], done: set[int], batch_size: int) -> list[Batch]:
    """``(k, unanswered questions of batch k)`` for every global batch with some left."""
    pending = []
    for k, rows in batches(len(questions), batch_size):
        left = [q for q in questions[rows] if q.id not in done]
        if left:
            pending.append((k, left))
    return pending


@dataclass(frozen=True)
class Decoder:
    """A loaded model and the decoding of a run; ``question`` turns a task's question text into
    the text sent (:func:`.protocols.question_form`)."""

    model: PreTrainedModel
    processor: ProcessorMixin
    method: str
    prompt_style: str | None
    options: dict
    question: Callable[[str], str] = str

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str], seed: int) -> list[str]:
        """Answers to one batch, decoded with ``seed``."""
        return generate(
            self.model,
            self.processor,
            images,
            [self.question(q) for q in questions],
            method=self.method,
            prompt_style=self.prompt_style,
            batch_size=len(questions),
            seed=seed,
            **self.options,
        )


def answer_record(question: Question, answer: str, method: str) -> dict:
    """One line of ``answers.jsonl``."""
    return {
        "id": question.id,
        "question": question.text,
        "answer": answer,
        "label": question.label,
        "method": method,
        "image": question.image,
        "group": question.group,
    }


def answer_batches(
    task: Task,
    batches: Sequence[Batch],
    decoder: Decoder,
    folder: RunFolder,
    rank: int,
    seed: int,
    progress: bool,
) -> None:
    """Answer ``batches`` in order, appending each to this process's answer file as it completes."""
    total = sum(len(batch) for _, batch in batches)
    with tqdm(total=total, unit="q", desc=f"{task.benchmark} {decoder.method}", disable=not progress) as bar:
        for k, batch in batches:
            images = [task.load_image(q.image) for q in batch]
            answers = decoder.answer(images, [q.text for q in batch], seed=seed + k)
            folder.append(rank, [answer_record(q, a, decoder.method) for q, a in zip(batch, answers)])
            bar.update(len(batch))
