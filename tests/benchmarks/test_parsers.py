"""Named answer parsers: each reproduces its source's rule on awkward phrasings."""

import pytest

from avisc_lib.benchmarks import parsers
from avisc_lib.benchmarks.parsers import UnparseableAnswer, available_parsers, get_parser, register

# answer: (pope official, pope avisc, pope strict, mme official); None = strict refuses it
CASES = {
    "Yes.": ("yes", "yes", "yes", "yes"),
    "No, there is not": ("no", "no", "no", "no"),
    "": ("yes", "yes", None, "other"),
    "NO": ("yes", "no", "no", "no"),
    "I don't see one": ("yes", "no", None, "other"),
    "yes": ("yes", "yes", "yes", "yes"),
    "no": ("no", "no", "no", "no"),
    "Not sure": ("yes", "yes", None, "no"),
    "Yes, there is no cat": ("no", "no", "yes", "yes"),
    "No\nthere is none": ("yes", "yes", "no", "no"),  # the newline hides the token from POPE
    "There is no dog.": ("no", "no", None, "other"),
    "Yes. But no dog": ("yes", "no", "yes", "yes"),  # POPE official reads the first sentence only
    "nope": ("yes", "yes", None, "no"),
    "  yes": ("yes", "yes", "yes", "other"),  # MME: the first 4 characters are "  ye"
    "The answer is yes": ("yes", "yes", None, "other"),
    "It isn't there": ("yes", "no", None, "other"),
}


@pytest.mark.parametrize("answer", CASES)
@pytest.mark.parametrize("column, bench, name", [(0, "pope", "official"), (1, "pope", "avisc"), (3, "mme", "official")])
def test_lenient_parsers(answer, column, bench, name):
    assert get_parser(bench, name)(answer) == CASES[answer][column]


@pytest.mark.parametrize("answer", CASES)
def test_strict_parser_accepts_only_a_clear_first_word(answer):
    expected = CASES[answer][2]
    if expected is None:
        with pytest.raises(UnparseableAnswer, match="not a clear yes/no"):
            parsers.strict(answer)
    else:
        assert parsers.strict(answer) == expected


@pytest.mark.parametrize(
    "answer, official, normalised, avisc",
    [
        ("Yes", "yes", "yes", "yes"),
        ("No", "no", "no", "no"),
        ("No.", "other", "no", "no"),
        ("yes", "other", "yes", "yes"),
        (" NO! ", "other", "no", "yes"),  # AvisC strips only "." and ",": "NO!" is no negation token
        ("No, there is not", "other", "other", "no"),
        ("", "other", "other", "yes"),
    ],
)
def test_amber_parsers(answer, official, normalised, avisc):
    assert get_parser("amber", "official")(answer) == official
    assert get_parser("amber", "normalised")(answer) == normalised
    assert get_parser("amber", "avisc")(answer) == avisc


def test_registry_lists_and_rejects_names():
    assert available_parsers("pope") == ("official", "avisc", "strict")
    assert set(available_parsers("mme")) == {"official", "avisc"}
    assert set(available_parsers("amber")) == {"official", "normalised", "avisc"}
    with pytest.raises(ValueError, match="unknown pope parser 'vcd'; available: official, avisc, strict"):
        get_parser("pope", "vcd")


def test_register_adds_a_named_parser(monkeypatch):
    monkeypatch.setattr(parsers, "_REGISTRY", {})
    register("toy", "always-no")(lambda answer: "no")
    assert get_parser("toy", "always-no")("Yes") == "no"
    assert available_parsers("toy") == ("always-no",)
