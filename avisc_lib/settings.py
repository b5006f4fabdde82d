"""``DecodeSettings``: every decoding option, validated, built from the method registry.

The options are the token choice's (below, read by every method) and those the registered methods
declare (:class:`avisc_lib.methods.Option`), in this order: the options several methods read
(``alpha``, ``beta``, ``lam``, ``layer_gamma``), the token choice's, then each method's own.
``decode``'s keywords, the benchmark runner's options and ``avisc-eval run``'s flags come from
:func:`decode_options`.

How the next token is chosen (argmax or sampling after temperature / top-k / top-p) is the same for
every method, one-pass ones included; only ``greedy`` (argmax) and ``sample`` (sampling) fix it, and
asking them for the other raises ``ValueError``. ``DecodeSettings.decoding`` names the choice made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from . import methods
from .methods.base import DEFAULT_ALPHA, OPEN_UNIT, POSITIVE, Check, Method, Option, int_at_least, is_int

DO_SAMPLE_HELP = (
    "sample the next token instead of taking the argmax, for every method (None: sample only for 'sample'; "
    "greedy cannot sample, sample cannot take the argmax)"
)
OPTIONAL_BOOL = Check(lambda v: v is None or isinstance(v, bool), "True, False or None")
OPTIONAL_COUNT = Check(lambda v: v is None or (is_int(v) and v >= 0), "None or an int >= 0")
OPTIONAL_INT = Check(lambda v: v is None or is_int(v), "None or an int")
TOKEN_CHOICE = (
    Option("do_sample", None, DO_SAMPLE_HELP, OPTIONAL_BOOL, bool),
    Option("temperature", 1.0, "sampling temperature > 0", Check(POSITIVE.test, "> 0")),
    Option("top_p", 1.0, "nucleus sampling mass in (0, 1]", OPEN_UNIT),
    Option("top_k", None, "sample among the k most likely tokens (None or 0: off)", OPTIONAL_COUNT, int),
    Option("max_new_tokens", 64, "most tokens generated", int_at_least(1), int),
    Option(
        "min_new_tokens",
        0,
        "EOS banned until this many tokens (InstructBLIP's official min_length=1)",
        int_at_least(0),
        int,
    ),
    Option("seed", None, "seeds sampling, VCD's noise and random_mask (None: torch's global RNG)", OPTIONAL_INT, int),
)


def decode_options() -> list[Option]:
    """Every option a caller sets besides ``method``: shared ones, the token choice's, each method's own."""
    shared, own = methods.registry.method_options()
    return [*shared, *TOKEN_CHOICE, *own]


def method_lines(bullet: str = "- ") -> str:
    """Every registered method with its summary, one per line (``bullet`` before each)."""
    return "\n".join(f"{bullet}{m.name}: {m.summary}" for m in methods.registered())


def method_help() -> str:
    """The help text of ``method``: every registered method, then branch functions."""
    names = "; ".join(f"{m.name} ({m.summary})" for m in methods.registered())
    return (
        f"{names}; in Python also your own branch, a function (features [B, N, D], attention [B, layers, N]) "
        "-> features"
    )


def method_table() -> str:
    """A markdown table of the registered methods: what each does, its own options, its passes."""
    rows = ["| method | what it does | options it reads | prefills, rows per step |", "|---|---|---|---|"]
    for m in methods.registered():
        read = ", ".join(f"`{o.name}`" for o in m.options) or "none (the token choice's only)"
        rows.append(f"| `{m.name}` | {m.summary} | {read} | {m.passes.prefills}, {m.passes.branches}B |")
    return "\n".join(rows)


def method_record(method: str | Callable) -> Method:
    """The registered method of that name, or a method from your branch function."""
    if isinstance(method, str):
        return methods.get(method)
    if not callable(method):
        raise ValueError(f"method must be a name or a branch function, got {method!r}")
    return methods.image_branch(method)


class DecodeSettings:
    """Every decoding option, validated. ``DecodeSettings(method, **options)``; options are attributes."""

    def __init__(self, method: str | Callable, **options: Any):
        record = method_record(method)
        declared = {option.name: option for option in decode_options()}
        unknown = sorted(set(options) - set(declared))
        if unknown:
            raise ValueError(f"unknown decode option(s): {', '.join(unknown)}")
        values = {name: options.get(name, option.default) for name, option in declared.items()}
        if values["do_sample"] is None:
            values["do_sample"] = record.choice == "sampling"
        if values["alpha"] is None:
            values["alpha"] = DEFAULT_ALPHA if declared["alpha"] in record.options else 0.0
        for name, value in values.items():
            declared[name].validate(value)
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "record", record)
        object.__setattr__(self, "_values", values)
        self._check_choice()
        object.__setattr__(self, "warpers", self._warpers())

    def __getattr__(self, name: str):
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"DecodeSettings has no option {name!r}")

    def __setattr__(self, name, value):
        raise AttributeError("DecodeSettings is frozen; build a new one")

    def __eq__(self, other) -> bool:
        return isinstance(other, DecodeSettings) and (self.method, self._values) == (other.method, other._values)

    __hash__ = None

    def __repr__(self) -> str:
        name = self.method if isinstance(self.method, str) else self.record.name
        return f"DecodeSettings(method={name!r}, {', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def _check_choice(self) -> None:
        """A token choice the method's name rules out raises."""
        name = self.record.name
        if self.record.choice == "argmax" and self.do_sample:
            raise ValueError(
                f"method={name!r} with do_sample=True: {name} takes the argmax; use method='sample' for plain sampling"
            )
        if self.record.choice == "sampling" and not self.do_sample:
            raise ValueError(
                f"method={name!r} with do_sample=False: {name} draws the token; use method='greedy' for the argmax"
            )

    @property
    def decoding(self) -> str:
        """How the next token is chosen: ``"sampling"`` or ``"argmax"``."""
        return "sampling" if self.do_sample else "argmax"

    @property
    def sampling(self) -> bool:
        """Whether the next token is drawn (``do_sample``, resolved), for every method alike."""
        return self.do_sample

    def used_options(self) -> dict:
        """The options this method reads, ``{name: value}``: the token choice's and its own."""
        read = {option.name for option in (*TOKEN_CHOICE, *self.record.options)}
        return {o.name: self._values[o.name] for o in decode_options() if o.name in read}

    @property
    def branch(self):
        """The second branch (:class:`avisc_lib.methods.Branch`), or None for one-pass methods."""
        record = self.record
        if record.branch is None or (record.branch_if is not None and not record.branch_if(self)):
            return None
        return record.branch

    @property
    def contrastive(self) -> bool:
        """Two sets of logits: a second branch, or a side branch read during the forward (ONLY)."""
        return self.branch is not None or self.record.side

    def _warpers(self) -> LogitsProcessorList:
        warpers = LogitsProcessorList()
        if self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(float(self.temperature)))
        if self.top_k:
            warpers.append(TopKLogitsWarper(int(self.top_k)))
        if self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(float(self.top_p)))
        return warpers


def settings_doc() -> str:
    """The methods and every option with its default and help, as ``help(DecodeSettings)`` shows them."""
    options = "\n".join(f"    {o.name} = {o.default!r}: {o.help}" for o in decode_options())
    return f"\n\nMethods:\n\n{method_lines('    ')}\n\nOptions:\n\n{options}\n"


_DOC = DecodeSettings.__doc__


def _refresh_doc() -> None:
    DecodeSettings.__doc__ = _DOC + settings_doc()


_refresh_doc()
methods.on_register(_refresh_doc)
