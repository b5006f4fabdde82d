"""Named answer parsers: a model's free-text answer → ``"yes"``, ``"no"`` or ``"other"``.

The parser changes the numbers, so every scorer takes a parser *name* and the name belongs in
any reported result. Parsers live in a small registry keyed by benchmark:

========  ============  ==========================================================  ==================
benchmark name          rule                                                        not yes/no
========  ============  ==========================================================  ==================
pope      official      POPE ``evaluate.py`` (= LLaVA ``eval_pope.py``): keep the    ``"yes"`` (as the
                        text before the first ".", drop ",", split on single        official scorer:
                        spaces; a token exactly ``No``/``no``/``not`` → no          "", "NO", "I don't
                                                                                    see one" are yes)
pope      avisc         AvisC ``recorder``: whole answer, drop "." and ",", split   ``"yes"``
                        on spaces; a token in {No, not, no, NO} or ending in
                        "n't" → no
pope      strict        first word, surrounding punctuation stripped, case-folded,  raises
                        must be ``yes`` or ``no``                                   :class:`UnparseableAnswer`
mme       official      MME ``calculation.py``: lower-case; exactly yes/no, else    ``"other"``
                        "yes" within the first 4 characters, else "no" within them  (scored wrong)
mme       avisc         the pope ``avisc`` rule: AvisC turns free text into         ``"yes"``
                        "Yes"/"No" with it before ``calculation.py``
amber     official      AMBER ``inference.py``: exactly ``"Yes"`` or ``"No"``       ``"other"`` (wrong,
                                                                                    not an answered No)
amber     normalised    strip whitespace and trailing "." / "!", case-fold, then     ``"other"``
                        exactly yes/no (so "No." and "yes" count; "No, there is
                        not" does not)
amber     avisc         the pope ``avisc`` rule, i.e. what AvisC does to free text  ``"yes"``
                        before handing "Yes"/"No" to ``inference.py``
========  ============  ==========================================================  ==================

``avisc`` is the paper's parser on all three benchmarks (the ``paper`` protocol of
:mod:`.protocols`). Only it reads "No, there is no X." as no for AMBER: ``official`` and
``normalised`` both score it wrong.

Only ``strict`` refuses answers; the official parsers keep their scorers' behaviour, which
is why ``"other"`` exists: the MME and AMBER metrics count it as wrong.
"""

from __future__ import annotations

import string
from collections.abc import Callable

YES, NO, OTHER = "yes", "no", "other"
Parser = Callable[[str], str]

_REGISTRY: dict[str, dict[str, Parser]] = {}


class UnparseableAnswer(ValueError):
    """A strict parser met an answer that is not a clear yes or no."""


def register(benchmark: str, name: str) -> Callable[[Parser], Parser]:
    """Decorator: make ``fn`` available as ``get_parser(benchmark, name)``."""

    def add(fn: Parser) -> Parser:
        _REGISTRY.setdefault(benchmark, {})[name] = fn
        return fn

    return add


def available_parsers(benchmark: str) -> tuple[str, ...]:
    """Names of the parsers registered for ``benchmark``."""
    return tuple(_REGISTRY.get(benchmark, ()))


def get_parser(benchmark: str, name: str) -> Parser:
    """The parser ``name`` for ``benchmark``; a clear error lists the valid names."""
    try:
        return _REGISTRY[benchmark][name]
    except KeyError:
        known = ", ".join(available_parsers(benchmark)) or "none"
        raise ValueError(f"unknown {benchmark} parser {name!r}; available: {known}") from None


@register("pope", "official")
def pope_official(answer: str) -> str:
    """POPE's official rule: first sentence, tokens No/no/not → no, anything else → yes."""
    tokens = answer.split(".", 1)[0].replace(",", "").split(" ")
    return NO if any(t in ("No", "no", "not") for t in tokens) else YES


@register("pope", "avisc")
@register("mme", "avisc")
@register("amber", "avisc")
def avisc_recorder(answer: str) -> str:
    """AvisC's ``recorder``: a negation word or an "n't" anywhere → no, else yes."""
    tokens = answer.replace(".", "").replace(",", "").split(" ")
    negative = any(t in ("No", "not", "no", "NO") or t.endswith("n't") for t in tokens)
    return NO if negative else YES


@register("pope", "strict")
def strict(answer: str) -> str:
    """A clear first word ``yes``/``no`` (any case, punctuation ignored); raises otherwise."""
    words = answer.split()
    first = words[0].strip(string.punctuation).lower() if words else ""
    if first not in (YES, NO):
        raise UnparseableAnswer(f"not a clear yes/no answer: {answer!r}")
    return first


@register("mme", "official")
def mme_official(answer: str) -> str:
    """MME ``calculation.py``: exact yes/no, else the first 4 characters decide, else other."""
    lowered = answer.lower()
    if lowered in (YES, NO):
        return lowered
    prefix = lowered[:4]
    if YES in prefix:
        return YES
    return NO if NO in prefix else OTHER


@register("amber", "official")
def amber_official(answer: str) -> str:
    """AMBER ``inference.py``: only the exact strings "Yes" and "No" are answers."""
    return {"Yes": YES, "No": NO}.get(answer, OTHER)


@register("amber", "normalised")
def amber_normalised(answer: str) -> str:
    """Strip, drop trailing "." / "!", case-fold, then the exact AMBER rule."""
    word = answer.strip().rstrip(".!").strip().lower()
    return word if word in (YES, NO) else OTHER
