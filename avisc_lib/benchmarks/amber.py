"""AMBER: annotations, queries, responses, and the discriminative and generative metrics.

Discriminative (official ``inference.py`` rules): **"No" is the positive class**. Per block,
``accuracy`` = correct / questions, ``precision`` = (answered No and truth no) / answered No,
``recall`` = (answered No and truth no) / truth no, ``f1`` their harmonic mean, all in percent
and unrounded, a zero denominator giving 0. Blocks: overall, existence
(``discriminative-hallucination``), attribute (state + number + action), state, number,
action, relation (``discriminative-relation`` + ``relation``).

Answers go through a named parser (:mod:`.parsers`). ``inference.py`` counts only the exact
strings "Yes" and "No" and leaves turning free text into them to the user. So the scorers
here (and ``avisc-eval score amber``), which read responses meant for ``inference.py``,
default to ``official``, that exact rule; the runner (``avisc-eval run``), which scores a
model's free text, defaults to ``normalised``: the same rule after dropping case,
surrounding whitespace and a final "." or "!", so it agrees with ``official`` on every
"Yes"/"No" and also counts "yes" and "No.". Both score "No, there is no X." as wrong (neither
yes nor no); only ``avisc``, AvisC's recorder and the paper protocol's parser, reads it as No.

Generative (ids 1-1004): nouns of each caption are kept if they are in the closed 418-word
vocabulary (keys and values of ``relation.json``); words of ``safe_words.txt`` are skipped; a
noun equal (or *similar*) to a truth object or one of its association words covers that
object; a noun equal or similar to a ``hallu`` object or its associations "hits" it; any other
vocabulary noun is a hallucination. CHAIR = hallucinated / candidate nouns, Cover = covered /
truth objects, Hal = % captions with a hallucination, Cog = hit / hallu objects (percent,
pooled over captions). AMBER score = ((100 − CHAIR) + overall F1) / 2.

Two NLP backends decide "noun" and "similar":

* ``official`` (needs ``nltk`` with its ``punkt``, ``averaged_perceptron_tagger`` and
  ``wordnet`` data, and ``spacy`` with ``en_core_web_lg``): NLTK ``word_tokenize`` →
  ``pos_tag`` → tokens tagged ``NN*`` → ``WordNetLemmatizer``; similar = spaCy similarity
  > 0.8. This is ``inference.py``'s path.
* ``builtin`` (no downloads): a regex tokenizer (letters and inner hyphens, case kept, as NLTK
  keeps it); a rule-based singulariser that imitates WordNet's noun lemmas (``dogs`` → ``dog``,
  ``glasses`` → ``glass``, ``sunglasses`` → ``sunglass``, ``leaves`` → ``leaf``, ``men`` →
  ``man``; ``grass``/``bus``/``tennis`` unchanged; capitalised words unchanged); no tagger,
  so every vocabulary word counts except after "to", a modal or a subject pronoun (verb
  readings: "to watch", "they skate") and "can" unless a determiner precedes it; similar =
  identical. Synonyms therefore come only from AMBER's own association lists
  (``relation.json``), which both backends use. Differences from ``official``: words the
  tagger would call verbs or adjectives in other contexts ("hot" in "hot dog", "watch" in
  "people watch") count here; vocabulary pairs that spaCy rates > 0.8 but AMBER's lists do
  not link are not merged here.

``backend="auto"`` takes ``official`` when it loads and ``builtin`` otherwise.

``official_rounding=True`` reproduces the printed numbers of ``inference.py`` exactly: every
counter starts at 0.001 (pooled attribute counters at 0.003), values are rounded to one
decimal, and F1 is computed from the rounded precision and recall with +1e-4 in the
denominator (+1e-3 for existence).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, astuple, dataclass, fields, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Protocol

import numpy as np

from .io import FormatError, read_json, read_records, require
from .parsers import NO, YES, get_parser
from .statistics import Columns, Measure, Units, ratio

GENERATIVE = "generative"
GROUPS = {  # annotation type → discriminative group
    "discriminative-attribute-state": "state",
    "discriminative-attribute-number": "number",
    "discriminative-attribute-action": "action",
    "discriminative-hallucination": "existence",
    "discriminative-relation": "relation",
    "relation": "relation",
}
BLOCKS = {  # output block → pooled groups, in output order
    "overall": ("existence", "state", "number", "action", "relation"),
    "existence": ("existence",),
    "attribute": ("state", "number", "action"),
    "state": ("state",),
    "number": ("number",),
    "action": ("action",),
    "relation": ("relation",),
}
TASKS = ("d", "g", "a")


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class AmberQuery:
    id: int
    image: str
    query: str


def load_annotations(path: str | Path) -> list[dict]:
    """``annotations.json``; a record's ``id`` must be its position + 1 (the scorer indexes by it)."""
    annotations = []
    for i, (where, record) in enumerate(read_records(path)):
        require(record, where, ("id", "type", "truth"))
        kind = record["type"]
        if record["id"] != i + 1:
            raise FormatError(f"{where}: id {record['id']!r} should be {i + 1}")
        if kind == GENERATIVE:
            require(record, where, ("hallu",))
        elif kind not in GROUPS:
            raise FormatError(f"{where}: unknown type {kind!r}")
        elif record["truth"] not in (YES, NO):
            raise FormatError(f"{where}: truth must be 'yes' or 'no', got {record['truth']!r}")
        annotations.append(record)
    return annotations


def load_queries(path: str | Path) -> list[AmberQuery]:
    """A query file (``query_all.json`` or one of its parts)."""
    queries = []
    for where, record in read_records(path):
        require(record, where, ("id", "image", "query"))
        queries.append(AmberQuery(int(record["id"]), str(record["image"]), str(record["query"])))
    return queries


def load_responses(path: str | Path) -> dict[int, str]:
    """``[{"id", "response"}, ...]`` (array or JSON Lines) → id → response."""
    responses: dict[int, str] = {}
    for where, record in read_records(path):
        require(record, where, ("id", "response"))
        rid, text = record["id"], record["response"]
        if not isinstance(rid, int) or isinstance(rid, bool) or not isinstance(text, str):
            raise FormatError(f"{where}: id must be an integer and response a string")
        if rid in responses:
            raise FormatError(f"{where}: duplicate id {rid}")
        responses[rid] = text
    return responses


@dataclass
class Vocabulary:
    """The generative scorer's word lists: associations (``relation.json``) and safe words."""

    association: dict[str, list[str]]
    safe_words: frozenset[str]

    @cached_property
    def words(self) -> frozenset[str]:
        """The closed vocabulary: keys and values of the association lists."""
        return frozenset(self.association) | {w for ws in self.association.values() for w in ws}

    @classmethod
    def load(cls, relation: str | Path, safe_words: str | Path) -> Vocabulary:
        association = read_json(relation)
        if not isinstance(association, dict):
            raise FormatError(f"{relation}: expected a JSON object word → association words")
        words = Path(safe_words).read_text(encoding="utf-8").split()
        return cls(association, frozenset(words))

    @classmethod
    def beside(cls, annotations: str | Path) -> Vocabulary:
        """The ``relation.json`` and ``safe_words.txt`` in the folder of ``annotations``."""
        folder = Path(annotations).parent
        return cls.load(folder / "relation.json", folder / "safe_words.txt")


def _annotated(annotations: Sequence[dict], responses: Mapping[int, str]) -> list[tuple[dict, str]]:
    """(annotation, response) pairs; a response id without annotation is an error."""
    bad = [i for i in responses if not 1 <= i <= len(annotations)]
    if bad:
        raise FormatError(f"response id(s) {bad[:5]} have no annotation (ids run 1..{len(annotations)})")
    return [(annotations[i - 1], text) for i, text in responses.items()]


# --------------------------------------------------------------------------- discriminative


class _Tally:
    """Dataclass mixin: ``a + b`` adds field by field."""

    def __add__(self, other):
        return type(self)(*(a + b for a, b in zip(astuple(self), astuple(other))))


@dataclass
class Counts(_Tally):
    """Discriminative tallies of one group of questions ("no" is the positive class)."""

    questions: int = 0
    correct: int = 0
    truth_no: int = 0
    answered_no: int = 0
    true_no: int = 0

    def add(self, truth: str, pred: str) -> None:
        self.questions += 1
        self.correct += pred == truth
        self.truth_no += truth == NO
        self.answered_no += pred == NO
        self.true_no += pred == NO and truth == NO


def _percent(num: float, den: float) -> float:
    return 100 * num / den if den else 0.0


def _seeded_percent(num: float, den: float, seed: float = 0.001) -> float:
    """``inference.py``'s printed ratio: counter seeded at ``seed``, percent, one decimal."""
    return round(num / (den + seed) * 100, 1)


def block_metrics(c: Counts) -> dict:
    """Accuracy, precision, recall, F1 in percent, unrounded."""
    precision, recall = _percent(c.true_no, c.answered_no), _percent(c.true_no, c.truth_no)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": _percent(c.correct, c.questions), "precision": precision, "recall": recall, "f1": f1}


def official_block_metrics(c: Counts, seed: float = 0.001, f1_eps: float = 1e-4) -> dict:
    """``inference.py``'s printed values: seeded counters, one decimal, F1 from rounded P and R."""
    precision = _seeded_percent(c.true_no, c.answered_no, seed)
    recall = _seeded_percent(c.true_no, c.truth_no, seed)
    p, r = precision / 100, recall / 100
    return {
        "accuracy": _seeded_percent(c.correct, c.questions, seed),
        "precision": precision,
        "recall": recall,
        "f1": round(2 * p * r / (p + r + f1_eps) * 100, 1),
    }


def discriminative_counts(
    annotations: Sequence[dict], responses: Mapping[int, str], parser: str = "official"
) -> dict[str, Counts]:
    """Counts per group (existence, state, number, action, relation) of the discriminative responses."""
    parse = get_parser("amber", parser)
    counts = {group: Counts() for group in BLOCKS["overall"]}
    for annotation, text in _annotated(annotations, responses):
        if annotation["type"] != GENERATIVE:
            counts[GROUPS[annotation["type"]]].add(annotation["truth"], parse(text))
    return counts


def score_discriminative(
    annotations: Sequence[dict],
    responses: Mapping[int, str],
    parser: str = "official",
    official_rounding: bool = False,
) -> dict:
    """The seven discriminative blocks (overall, existence, attribute, state, number, action, relation)."""
    counts = discriminative_counts(annotations, responses, parser)
    result = {}
    for block, groups in BLOCKS.items():
        pooled = sum((counts[g] for g in groups), Counts())
        if official_rounding:
            seed = 0.001 * (1 if block == "overall" else len(groups))
            result[block] = official_block_metrics(pooled, seed, 1e-3 if block == "existence" else 1e-4)
        else:
            result[block] = block_metrics(pooled)
    return result


# --------------------------------------------------------------------------- generative


class NounBackend(Protocol):
    """What the generative scorer needs from an NLP toolkit."""

    name: str

    def nouns(self, text: str) -> list[str]: ...

    def similar(self, a: str, b: str) -> bool: ...


_TOKEN = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")
_IRREGULAR = {
    "men": "man", "women": "woman", "children": "child", "mice": "mouse", "feet": "foot", "teeth": "tooth",
    "geese": "goose", "oxen": "ox", "leaves": "leaf", "knives": "knife", "shelves": "shelf", "wolves": "wolf",
    "scarves": "scarf", "loaves": "loaf", "halves": "half", "buses": "bus", "tomatoes": "tomato",
    "potatoes": "potato", "mangoes": "mango",
}  # fmt: skip
_VERB_CONTEXT = frozenset(
    ["to", "can", "could", "will", "would", "shall", "should", "may", "might", "must"]
    + ["i", "you", "we", "they", "he", "she", "it", "who"]
)
_DETERMINERS = frozenset(
    ["a", "an", "the", "this", "that", "these", "those", "each", "every", "another"]
    + ["one", "two", "three", "four", "five", "several", "some"]
    + ["his", "her", "its", "their", "my", "your", "our"]
)
_DETERMINER_ONLY = frozenset({"can"})  # read as a noun only after a determiner (else the modal)


def singularise(word: str) -> str:
    """WordNet-like noun lemma of a lower-case word (others are returned unchanged)."""
    if not word.islower():
        return word
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes", "zes")):
        return word[:-2]
    if word.endswith("men"):
        return word[:-3] + "man"
    return word[:-1] if word.endswith("s") and len(word) > 2 else word


class BuiltinBackend:
    """No-download approximation of the official NLTK + spaCy path (see the module docstring)."""

    name = "builtin"

    def nouns(self, text: str) -> list[str]:
        tokens = _TOKEN.findall(text)
        nouns = []
        for prev, token in zip([""] + tokens, tokens):
            prev, lemma = prev.lower(), singularise(token)
            if prev not in _VERB_CONTEXT and (lemma not in _DETERMINER_ONLY or prev in _DETERMINERS):
                nouns.append(lemma)
        return nouns

    def similar(self, a: str, b: str) -> bool:
        return a == b


class OfficialBackend:
    """``inference.py``'s NLP: NLTK nouns + WordNet lemmas, spaCy ``en_core_web_lg`` similarity."""

    name = "official"

    def __init__(self, threshold: float = 0.8, model: str = "en_core_web_lg"):
        try:
            import nltk
            import spacy
            from nltk.stem import WordNetLemmatizer

            self._nltk, self._lemmatize = nltk, WordNetLemmatizer().lemmatize
            self._nlp = spacy.load(model)
            self.nouns("A dog on the grass.")  # fails now, not mid-run, if NLTK data are missing
        except (ImportError, OSError, LookupError) as e:
            raise ImportError(
                "AMBER's official generative scoring needs nltk (data: punkt, averaged_perceptron_tagger, "
                f"wordnet) and spacy with {model}; use backend='builtin' otherwise. Cause: {e}"
            ) from e
        self.threshold = threshold
        self._docs: dict = {}

    def nouns(self, text: str) -> list[str]:
        tagged = self._nltk.pos_tag(self._nltk.word_tokenize(text))
        return [self._lemmatize(word) for word, tag in tagged if tag.startswith("NN")]

    def similar(self, a: str, b: str) -> bool:
        return self._doc(a).similarity(self._doc(b)) > self.threshold

    def _doc(self, word: str):
        if word not in self._docs:
            self._docs[word] = self._nlp(word)
        return self._docs[word]


BACKENDS = ("auto", "official", "builtin")


def get_backend(name: str = "auto") -> NounBackend:
    """``official``, ``builtin``, or ``auto`` (official when its dependencies load)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown AMBER backend {name!r}; expected one of {BACKENDS}")
    if name == "builtin":
        return BuiltinBackend()
    try:
        return OfficialBackend()
    except ImportError:
        if name == "official":
            raise
        return BuiltinBackend()


@dataclass
class CaptionCounts(_Tally):
    """Generative tallies, summed over captions."""

    captions: int = 0
    hallucinating: int = 0  # captions with at least one hallucinated noun
    candidates: int = 0
    hallucinated: int = 0
    truth: int = 0
    covered: int = 0
    hallu: int = 0
    hit: int = 0


def _owned(objects: Sequence[str], association: Mapping[str, list[str]]) -> list[tuple[str, int]]:
    """(word, owning object index): all association words first, then the objects (official order)."""
    linked = [(w, i) for i, obj in enumerate(objects) for w in association.get(obj, [])]
    return linked + [(obj, i) for i, obj in enumerate(objects)]


def _first_owner(words: list[tuple[str, int]], match) -> int | None:
    return next((owner for word, owner in words if match(word)), None)


def caption_counts(
    response: str, truth: Sequence[str], hallu: Sequence[str], vocab: Vocabulary, nlp: NounBackend
) -> CaptionCounts:
    """Tallies of one caption, following ``inference.py`` step by step (duplicates count)."""
    candidates = [n for n in nlp.nouns(response) if n in vocab.words]
    safe, risky = _owned(truth, vocab.association), _owned(hallu, vocab.association)
    covered, hit, hallucinated = set(), set(), 0
    for noun in candidates:
        if noun in vocab.safe_words:
            continue
        owner = _first_owner(safe, noun.__eq__)
        if owner is not None:
            covered.add(owner)
            continue
        for match in (noun.__eq__, partial(nlp.similar, noun)):  # no early exit here, as official
            owner = _first_owner(risky, match)
            if owner is not None:
                hit.add(owner)
        owner = _first_owner(safe, partial(nlp.similar, noun))
        if owner is not None:
            covered.add(owner)
            continue
        hallucinated += 1
    return CaptionCounts(
        captions=1,
        hallucinating=int(hallucinated > 0),
        candidates=len(candidates),
        hallucinated=hallucinated,
        truth=len(truth),
        covered=len(covered),
        hallu=len(hallu),
        hit=len(hit),
    )


def generative_metrics(c: CaptionCounts, official_rounding: bool = False) -> dict:
    """CHAIR, Cover, Hal, Cog in percent (official rounding: seeded counters, one decimal)."""
    if official_rounding:
        clean = c.captions - c.hallucinating
        return {
            "chair": _seeded_percent(c.hallucinated, c.candidates),
            "cover": _seeded_percent(c.covered, c.truth),
            "hal": round(100 - clean / (c.captions + 0.001) * 100, 1),
            "cog": _seeded_percent(c.hit, c.hallu),
        }
    return {
        "chair": _percent(c.hallucinated, c.candidates),
        "cover": _percent(c.covered, c.truth),
        "hal": _percent(c.hallucinating, c.captions),
        "cog": _percent(c.hit, c.hallu),
    }


def score_generative(
    annotations: Sequence[dict],
    responses: Mapping[int, str],
    vocab: Vocabulary,
    backend: str | NounBackend = "auto",
    official_rounding: bool = False,
) -> dict:
    """CHAIR, Cover, Hal, Cog over the generative responses (ids of ``generative`` annotations)."""
    captions = [(a, text) for a, text in _annotated(annotations, responses) if a["type"] == GENERATIVE]
    total = CaptionCounts()
    if captions:
        nlp = get_backend(backend) if isinstance(backend, str) else backend
        for annotation, text in captions:
            total += caption_counts(text, annotation["truth"], annotation["hallu"], vocab, nlp)
    return generative_metrics(total, official_rounding)


def amber_score(chair: float, f1: float) -> float:
    """AMBER score = ((100 − CHAIR) + F1) / 2 (F1 of the overall discriminative block)."""
    return ((100 - chair) + f1) / 2


def score_amber(
    annotations: Sequence[dict],
    responses: Mapping[int, str],
    task: str = "a",
    *,
    parser: str = "official",
    vocab: Vocabulary | None = None,
    backend: str | NounBackend = "auto",
    official_rounding: bool = False,
) -> dict:
    """The blocks ``task`` covers: ``d`` discriminative, ``g`` generative, ``a`` both + AMBER score."""
    if task not in TASKS:
        raise ValueError(f"unknown AMBER task {task!r}; expected one of {TASKS}")
    result = {}
    if task in "da":
        result["discriminative"] = score_discriminative(annotations, responses, parser, official_rounding)
    if task in "ga":
        if vocab is None:
            raise ValueError("generative scoring needs the AMBER vocabulary (relation.json, safe_words.txt)")
        result["generative"] = score_generative(annotations, responses, vocab, backend, official_rounding)
    if task == "a":
        result["amber_score"] = amber_score(result["generative"]["chair"], result["discriminative"]["overall"]["f1"])
    return result


# --------------------------------------------------------------------------- uncertainty

CAPTION_COLUMNS = tuple(f.name for f in fields(CaptionCounts))
QUESTION_COLUMNS = tuple(f.name for f in fields(Counts))
GROUP_COLUMNS = tuple(f"group:{g}" for g in BLOCKS["overall"])


def score_units(
    annotations: Sequence[dict],
    responses: Mapping[int, str],
    task: str = "a",
    *,
    parser: str = "official",
    vocab: Vocabulary | None = None,
    backend: str | NounBackend = "auto",
) -> Units:
    """One row per caption (its :class:`CaptionCounts`) or discriminative question (its
    :class:`Counts` and a one-hot group), the columns of the other kind 0; the two kinds are strata."""
    parse = get_parser("amber", parser)
    nlp = get_backend(backend) if "g" in task and isinstance(backend, str) else backend
    columns = CAPTION_COLUMNS + QUESTION_COLUMNS + GROUP_COLUMNS
    rows, strata = [], []
    for annotation, text in _annotated(annotations, responses):
        caption = annotation["type"] == GENERATIVE
        if caption and task in "ga":
            row = asdict(caption_counts(text, annotation["truth"], annotation["hallu"], vocab, nlp))
        elif not caption and task in "da":
            counts = Counts()
            counts.add(annotation["truth"], parse(text))
            row = asdict(counts) | {f"group:{GROUPS[annotation['type']]}": 1}
        else:
            continue
        rows.append([row.get(c, 0) for c in columns])
        strata.append(caption)
    return Units(np.array(rows, dtype=float).reshape(-1, len(columns)), columns, np.array(strata))


def _share(num: str, den: str, wilson: bool = False) -> Measure:
    """``num / den`` (column totals) in percent; with ``wilson``, a Wilson interval."""
    return Measure(lambda c: ratio(c.total(num), c.total(den)), 100, (num, den) if wilson else None)


def _block_f1(groups: Sequence[str]) -> Measure:
    """F1 of "no" over the questions of ``groups`` (as :func:`block_metrics`), in percent."""

    def f1(c: Columns) -> np.ndarray:
        member = sum(c[f"group:{g}"] for g in groups)
        true_no, answered_no, truth_no = ((c[k] * member).sum(-1) for k in ("true_no", "answered_no", "truth_no"))
        return ratio(2 * true_no, answered_no + truth_no)

    return Measure(f1, 100)


def measures(task: str = "a") -> dict[str, Measure]:
    """Measures of :func:`score_amber`'s reported values for ``task``, keyed by their path in its output."""
    found = {}
    if task in "ga":
        found |= {
            "generative.chair": _share("hallucinated", "candidates"),
            "generative.cover": _share("covered", "truth"),
            "generative.hal": _share("hallucinating", "captions", wilson=True),
            "generative.cog": _share("hit", "hallu"),
        }
    if task in "da":
        found["discriminative.overall.accuracy"] = replace(_share("correct", "questions", wilson=True), right="correct")
        reported = ("overall", "existence", "attribute", "relation")
        found |= {f"discriminative.{b}.f1": _block_f1(BLOCKS[b]) for b in reported}
    if task == "a":
        chair, f1 = found["generative.chair"], found["discriminative.overall.f1"]
        found["amber_score"] = Measure(lambda c: (100 - 100 * chair.statistic(c) + 100 * f1.statistic(c)) / 2)
    return found
