"""AMBER: loaders, discriminative metrics (official test vectors), generative CHAIR/Cover/Hal/Cog."""

import importlib.util
import json
import sys
import types
from collections import Counter

import pytest
from conftest import DATA

from avisc_lib.benchmarks import amber
from avisc_lib.benchmarks.amber import (
    BuiltinBackend,
    Vocabulary,
    caption_counts,
    get_backend,
    load_annotations,
    load_queries,
    load_responses,
    score_amber,
    score_discriminative,
    score_generative,
    singularise,
)
from avisc_lib.benchmarks.io import FormatError

AMBER = DATA / "AMBER" / "data"


@pytest.fixture(scope="module")
def annotations():
    return load_annotations(AMBER / "annotations.json")


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.beside(AMBER / "annotations.json")


def _discriminative_ids(annotations):
    return [a["id"] for a in annotations if a["type"] != "generative"]


# --------------------------------------------------------------------------- files


def test_real_annotations_queries_and_vocabulary(annotations, vocab):
    assert len(annotations) == 15220
    assert Counter(a["type"] for a in annotations)["discriminative-hallucination"] == 4924
    assert len(load_queries(AMBER / "query" / "query_generative.json")) == 1004
    queries = load_queries(AMBER / "query" / "query_discriminative.json")
    assert (len(queries), queries[0].id, queries[-1].image) == (14216, 1005, "AMBER_1004.jpg")
    assert len(vocab.words) == 418 and "TV" in vocab.words and "e-book" in vocab.words
    assert vocab.safe_words == {
        "orange",
        "snack",
        "line",
        "camera",
        "light",
        "shoe",
        "sign",
        "range",
        "individual",
    }


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"id": 1, "response": "Yes"}, {"id": 1, "response": "No"}], "duplicate id 1"),
        ([{"id": 1}], r"missing field\(s\) 'response'"),
        ([{"id": "1", "response": "No"}], "id must be an integer"),
    ],
)
def test_malformed_responses(tmp_path, records, message):
    (tmp_path / "r.json").write_text(json.dumps(records))
    with pytest.raises(FormatError, match=message):
        load_responses(tmp_path / "r.json")


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"id": 2, "type": "relation", "truth": "no"}], r"record 1: id 2 should be 1"),
        ([{"id": 1, "type": "caption", "truth": "no"}], "unknown type 'caption'"),
        ([{"id": 1, "type": "relation", "truth": "No"}], "truth must be 'yes' or 'no'"),
        ([{"id": 1, "type": "generative", "truth": ["dog"]}], r"missing field\(s\) 'hallu'"),
    ],
)
def test_malformed_annotations(tmp_path, records, message):
    (tmp_path / "a.json").write_text(json.dumps(records))
    with pytest.raises(FormatError, match=message):
        load_annotations(tmp_path / "a.json")


def test_response_without_annotation_is_an_error(annotations):
    with pytest.raises(FormatError, match=r"response id\(s\) \[15221\] have no annotation"):
        score_discriminative(annotations, {15221: "No"})


# --------------------------------------------------------------------------- discriminative


# AMBER's official logic ("No" is the positive class) on all 14216 discriminative ids: (acc, P, R, F1)
VECTORS = {
    "No": {"overall": (66.3, 66.3, 100, 79.7), "existence": (100, 100, 100, 100),
           "attribute": (50.0, 50.0, 100, 66.7), "relation": (41.4, 41.4, 100, 58.6)},
    "Yes": {"overall": (33.7, 0, 0, 0), "attribute": (50.0, 0, 0, 0), "relation": (58.6, 0, 0, 0)},
    "no": {"overall": (0, 0, 0, 0), "existence": (0, 0, 0, 0), "attribute": (0, 0, 0, 0)},
}  # fmt: skip


@pytest.mark.parametrize("answer", VECTORS)
def test_official_test_vectors(annotations, answer):
    result = score_discriminative(
        annotations, dict.fromkeys(_discriminative_ids(annotations), answer), official_rounding=True
    )
    for block, expected in VECTORS[answer].items():
        got = result[block]
        assert (got["accuracy"], got["precision"], got["recall"], got["f1"]) == expected, block


def test_perfect_answers_score_100_everywhere(annotations):
    responses = {i: annotations[i - 1]["truth"].capitalize() for i in _discriminative_ids(annotations)}
    for official_rounding in (False, True):
        result = score_discriminative(annotations, responses, official_rounding=official_rounding)
        assert list(result) == ["overall", "existence", "attribute", "state", "number", "action", "relation"]
        assert all(v == 100 for block in result.values() for v in block.values())


def test_existence_f1_uses_its_own_epsilon(annotations):
    existence = [a["id"] for a in annotations if a["type"] == "discriminative-hallucination"]
    responses = {i: "No" if k % 2 else "Yes" for k, i in enumerate(existence)}
    official = score_discriminative(annotations, responses, official_rounding=True)["existence"]
    assert official == {"accuracy": 50.0, "precision": 100.0, "recall": 50.0, "f1": 66.6}  # 66.7 with +1e-4
    exact = score_discriminative(annotations, responses)["existence"]
    assert exact == {"accuracy": 50.0, "precision": 100.0, "recall": 50.0, "f1": pytest.approx(200 / 3)}


def test_unrounded_values_are_exact_fractions(annotations):
    result = score_discriminative(annotations, dict.fromkeys(_discriminative_ids(annotations), "No"))
    overall = result["overall"]
    assert overall["accuracy"] == overall["precision"] == 100 * 9427 / 14216
    assert overall["f1"] == pytest.approx(2 * overall["precision"] * 100 / (overall["precision"] + 100))
    assert result["relation"]["accuracy"] == 100 * 689 / 1664


def test_mixed_phrasings_by_parser(annotations):
    # relation: 975 yes then "No." for the 689 no; state: lower-case "yes", exact "No"
    responses = {}
    for a in annotations:
        if a["type"] in ("discriminative-relation", "relation"):
            responses[a["id"]] = "Yes" if a["truth"] == "yes" else "No."
        elif a["type"] == "discriminative-attribute-state":
            responses[a["id"]] = "yes" if a["truth"] == "yes" else "No"
    official = score_discriminative(annotations, responses)
    assert official["relation"] == {"accuracy": 100 * 975 / 1664, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert official["state"] == {"accuracy": 50.0, "precision": 100.0, "recall": 100.0, "f1": 100.0}
    for parser in ("normalised", "avisc"):
        lenient = score_discriminative(annotations, responses, parser)
        assert lenient["relation"]["accuracy"] == lenient["state"]["accuracy"] == 100.0
    assert official["existence"] == {
        "accuracy": 0.0,
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
    }  # nothing asked


# --------------------------------------------------------------------------- generative


# AMBER_1: truth sky, forest, grass, person, lake, mountain, road; hallu cloud, sun, bird, dog, flower
CAPTION = (
    "Two people walk along the road beside a lake, near trees and a dog; "
    "mountains rise under an orange sky and a car waits."
)


def test_hand_built_caption(annotations, vocab):
    a = annotations[0]
    counts = caption_counts(CAPTION, a["truth"], a["hallu"], vocab, BuiltinBackend())
    # candidates: people road lake tree dog mountain orange sky car; orange is a safe word (counted, never
    # hallucinated); people → person, tree → forest by association; dog is a hallu object; car is neither
    assert (counts.candidates, counts.hallucinated) == (9, 2)
    assert (counts.covered, counts.truth, counts.hit, counts.hallu) == (6, 7, 1, 5)
    result = score_generative(annotations, {1: CAPTION, 2: "Nothing."}, vocab, "builtin")
    assert result == {"chair": 100 * 2 / 9, "cover": 100 * 6 / 17, "hal": 50.0, "cog": 10.0}


def test_official_rounding_of_generative_metrics(annotations, vocab):
    result = score_generative(
        annotations, {1: CAPTION, 3: "A child on the grass."}, vocab, "builtin", official_rounding=True
    )
    # 11 candidates / 2 hallucinated; 8 of 10 truth covered; 1 of 10 hallu hit; 1 of 2 captions hallucinate
    assert result == {"chair": round(2 / 11.001 * 100, 1), "cover": 80.0, "hal": 50.0, "cog": 10.0}


class ToyNLP:
    """Whitespace nouns; 'dog' is similar to 'sky' (to exercise the official control flow)."""

    name = "toy"

    def nouns(self, text):
        return text.split()

    def similar(self, a, b):
        return a == b or {a, b} == {"dog", "sky"}


def test_first_owner_and_no_early_exit_after_a_hallu_match(annotations, vocab):
    a = annotations[0]
    ground = caption_counts("ground", a["truth"], a["hallu"], vocab, ToyNLP())
    assert ground.covered == 1  # 'ground' is linked to grass and road; only the first owner (grass) counts
    dog = caption_counts("dog", a["truth"], a["hallu"], vocab, ToyNLP())
    # an exact hallu word still meets the similarity checks: like 'sky', so covered, not hallucinated
    assert (dog.hit, dog.covered, dog.hallucinated) == (1, 1, 0)


def test_amber_score_and_task_blocks(annotations, vocab):
    responses = {1: CAPTION, **dict.fromkeys(_discriminative_ids(annotations), "No")}
    full = score_amber(annotations, responses, "a", vocab=vocab, backend="builtin")
    assert list(full) == ["discriminative", "generative", "amber_score"]
    assert full["amber_score"] == ((100 - full["generative"]["chair"]) + full["discriminative"]["overall"]["f1"]) / 2
    assert list(score_amber(annotations, responses, "d")) == ["discriminative"]
    assert list(score_amber(annotations, responses, "g", vocab=vocab, backend="builtin")) == ["generative"]
    with pytest.raises(ValueError, match="needs the AMBER vocabulary"):
        score_amber(annotations, responses, "g")
    with pytest.raises(ValueError, match="unknown AMBER task"):
        score_amber(annotations, responses, "x")


def test_no_generative_responses_give_zero_chair(annotations, vocab):
    result = score_amber(annotations, {2000: "No"}, "a", vocab=vocab, backend="official")  # never loaded: no captions
    assert result["generative"] == {"chair": 0.0, "cover": 0.0, "hal": 0.0, "cog": 0.0}


@pytest.mark.parametrize(
    "word, lemma",
    [
        ("dogs", "dog"), ("glasses", "glass"), ("sunglasses", "sunglass"), ("leaves", "leaf"), ("men", "man"),
        ("women", "woman"), ("children", "child"), ("skies", "sky"), ("benches", "bench"), ("boxes", "box"),
        ("grass", "grass"), ("bus", "bus"), ("tennis", "tennis"), ("people", "people"), ("TVs", "TVs"),
        ("Dogs", "Dogs"), ("shoes", "shoe"),
    ],
)  # fmt: skip
def test_singularise_imitates_wordnet(word, lemma):
    assert singularise(word) == lemma


def test_builtin_noun_readings():
    nouns = BuiltinBackend().nouns("You can see a can of soda, two dogs, an e-book and people who like to watch TV.")
    assert [n for n in nouns if n in {"can", "dog", "watch", "e-book", "TV", "people"}] == [
        "can",
        "dog",
        "e-book",
        "people",
        "TV",
    ]


# --------------------------------------------------------------------------- the official NLP path


def _fake_official_modules(monkeypatch, spacy_load=None):
    """Minimal stand-ins for nltk and spacy, to test the official backend's wiring."""
    nltk, stem, spacy = types.ModuleType("nltk"), types.ModuleType("nltk.stem"), types.ModuleType("spacy")
    nltk.word_tokenize = str.split
    nltk.pos_tag = lambda tokens: [(t, "NNS" if t.endswith("s") else "VBZ") for t in tokens]
    stem.WordNetLemmatizer = lambda: types.SimpleNamespace(lemmatize=lambda w: w[:-1])

    class Doc:
        def __init__(self, text):
            self.text = text

        def similarity(self, other):
            return 1.0 if self.text == other.text else 0.9 if {self.text, other.text} == {"bike", "bicycle"} else 0.1

    spacy.load = spacy_load or (lambda model: Doc)
    for name, module in (("nltk", nltk), ("nltk.stem", stem), ("spacy", spacy)):
        monkeypatch.setitem(sys.modules, name, module)


def test_official_backend_wiring(monkeypatch):
    _fake_official_modules(monkeypatch)
    nlp = get_backend("auto")
    assert nlp.name == "official"
    assert nlp.nouns("bikes stands near dogs") == ["bike", "stand", "dog"]
    assert nlp.similar("bike", "bicycle") and not nlp.similar("bike", "dog")


def test_missing_spacy_model_falls_back_or_fails_clearly(monkeypatch):
    def load(model):
        raise OSError(f"[E050] Can't find model '{model}'")

    _fake_official_modules(monkeypatch, load)
    assert get_backend("auto").name == "builtin"
    with pytest.raises(ImportError, match="spacy with en_core_web_lg; use backend='builtin'"):
        get_backend("official")


@pytest.mark.skipif(
    importlib.util.find_spec("nltk") is not None and importlib.util.find_spec("spacy") is not None,
    reason="nltk and spacy are installed",
)
def test_official_backend_needs_its_packages():
    with pytest.raises(ImportError, match="needs nltk"):
        get_backend("official")
    assert get_backend("auto").name == "builtin"
    with pytest.raises(ValueError, match="unknown AMBER backend"):
        get_backend("spacy")
    assert amber.BACKENDS == ("auto", "official", "builtin")
