"""AvisC and its baselines as an lmms-eval model (``pip install "avisc-tutorial[lmms]"``).

``python -m lmms_eval --model avisc --model_args pretrained=llava-hf/llava-1.5-7b-hf,method=avisc,alpha=2.5
--tasks pope``. lmms-eval finds the class through the ``lmms_eval.models`` entry point (see
``manifest``). ``pretrained`` is any name ``load_model`` accepts ("tiny", "llava", "instructblip", a
hub id, a folder); ``method`` and the method's hyper-parameters (``alpha``, ``beta``, ``lam``, ...)
go to ``decode``; the task's generation kwargs give max_new_tokens, do_sample, temperature, top_p.
``dtype`` (auto, float16, bfloat16, float32) and ``quantization`` (auto, none, 4bit, 8bit) follow the
run profiles' rules when "auto" (:func:`avisc_lib.models.placement.load_options`): a 7B model on a T4 loads
in 4-bit, e.g. ``--model_args pretrained=llava,quantization=auto``.
"""

from __future__ import annotations

from itertools import groupby
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from PIL import Image

from .. import methods
from ..generation import generate
from ..models.loading import default_device, load_model
from ..models.placement import load_options
from .hf_generate import custom_generate

MODEL_ID = "avisc"  # lmms-eval's --model name (the package's, not a method's)
# Task generation kwargs that decode takes as they are; "until" is applied to the answers.
TASK_OPTIONS = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k")


def manifest() -> ModelManifest:
    """The ``lmms_eval.models`` entry point: ``--model avisc`` is :class:`AviscModel`."""
    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.AviscModel")


class AviscModel(lmms):
    """Answers lmms-eval ``generate_until`` requests with ``avisc_lib.generate``, in batches."""

    is_simple = True

    def __init__(
        self,
        pretrained: str = "tiny",
        method: str = methods.DEFAULT_METHOD,
        batch_size: int | str = 1,
        device: str | None = None,
        prompt_style: str | None = None,
        dtype: str = "auto",
        quantization: str = "auto",
        **hyper_parameters,
    ) -> None:
        super().__init__()
        custom_generate(method, **hyper_parameters)  # validates the method and its hyper-parameters
        self.method, self.hyper_parameters, self.prompt_style = method, hyper_parameters, prompt_style
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        device = device or str(default_device())
        options = load_options(pretrained, device, dtype, quantization)
        self.model, self.processor = load_model(pretrained, device=device, **options)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """One answer per request, in order; consecutive requests with equal generation kwargs share batches."""
        answers: list[str] = []
        for _, group in groupby(requests, key=lambda r: repr(sorted(r.args[1].items()))):
            group = list(group)
            options, until = task_options(group[0].args[1])
            images = [self.image(request) for request in group]
            questions = [request.args[0] for request in group]
            texts = generate(
                self.model,
                self.processor,
                images,
                questions,
                method=self.method,
                prompt_style=self.prompt_style,
                batch_size=self.batch_size,
                **self.hyper_parameters,
                **options,
            )
            answers += [cut_at(text, until) for text in texts]
        return answers

    def image(self, request: Instance) -> Image.Image:
        """The request's one image (the methods contrast image branches, so exactly one is needed)."""
        _, _, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if len(visuals) != 1 or not isinstance(visuals[0], Image.Image):
            raise ValueError(f"task {task!r}, doc {doc_id}: the avisc model needs exactly one image, got {visuals!r}")
        return visuals[0].convert("RGB")

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "the avisc model scores no continuations (its methods change how tokens are chosen, not a "
            "likelihood); run tasks with output_type generate_until, or use avisc_lib.answer_logits for "
            "first-answer-token logits"
        )

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("the avisc model answers single-round generate_until tasks only")


def task_options(gen_kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``(decode options, stop strings)`` from a task's generation kwargs.

    ``num_beams`` above 1 and unknown kwargs raise ``ValueError``; sampling options count only with
    ``do_sample`` (tasks write ``temperature: 0`` for greedy).
    """
    kwargs = dict(gen_kwargs)
    until = kwargs.pop("until", [])
    until = [until] if isinstance(until, str) else list(until)
    if int(kwargs.pop("num_beams", 1) or 1) > 1:
        raise ValueError(f"num_beams={gen_kwargs['num_beams']!r}: the avisc model decodes without beams")
    unknown = sorted(set(kwargs) - set(TASK_OPTIONS))
    if unknown:
        raise ValueError(f"generation kwargs {unknown} are not supported; supported: {TASK_OPTIONS} and until")
    options = {"max_new_tokens": int(kwargs.get("max_new_tokens", 64)), "do_sample": bool(kwargs.get("do_sample"))}
    if options["do_sample"]:
        options.update({name: kwargs[name] for name in ("temperature", "top_p", "top_k") if name in kwargs})
    return options, until


def cut_at(text: str, until: list[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text
