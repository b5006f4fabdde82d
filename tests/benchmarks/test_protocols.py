"""Named protocols ("argmax", "paper", "official") in the runner and ``avisc-eval run --protocol``."""

import json
from pathlib import Path

import pytest
from conftest import save_model_folder

from avisc_lib import generate, load_model
from avisc_lib.benchmarks import build_task, get_parser, pope_metrics, runner
from avisc_lib.benchmarks.cli import main
from avisc_lib.benchmarks.protocols import (
    PROTOCOL_HELP,
    PROTOCOLS,
    llava_mme_text,
    mme_first_line,
    model_kind,
    question_form,
    resolve_protocol,
)
from avisc_lib.benchmarks.store import ConfigMismatch
from avisc_lib.methods import registered

POPE = dict(model_name="tiny", method="avisc", limit=8, batch_size=4, seed=0, progress=False)
# The paper's generation settings (its scripts and LAVIS; see avisc_lib.benchmarks.protocols).
LLAVA_PAPER = dict(
    do_sample=True,
    temperature=1.0,
    top_p=1.0,
    top_k=None,
    min_new_tokens=0,
    max_new_tokens=64,
    beta=0.1,
    lam=1.0,
    layer_gamma=0.5,
)
INSTRUCTBLIP_PAPER = LLAVA_PAPER | dict(top_k=50, min_new_tokens=1)


def _config(folder):
    return json.loads((folder / "config.json").read_text())


def _answers(folder):
    return [json.loads(line)["answer"] for line in (folder / "answers.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny", device="cpu")


def test_argmax_protocol_gives_the_library_defaults(tmp_path, tiny):
    """Answers as ``generate`` with no options gives them (batch k: seed + k); official parser."""
    metrics = runner.run_benchmark("pope", out_dir=tmp_path, protocol="argmax", **POPE)
    task = build_task("pope", limit=8, seed=0)
    images = [task.load_image(q.image) for q in task.questions]
    texts = [q.text for q in task.questions]
    expected = generate(*tiny, images, texts, method="avisc", batch_size=4, seed=0)
    assert _answers(tmp_path) == expected
    labels = [q.label for q in task.questions]
    official = pope_metrics(labels, [get_parser("pope", "official")(a) for a in expected])
    assert {k: v for k, v in metrics.items() if k != "intervals"} == official
    config = _config(tmp_path)
    assert config["protocol"] == "argmax" and config["prompt_style"] is None
    assert config["decode"]["alpha"] == 1.0 and config["decode"]["do_sample"] is False


def test_cli_protocol_argmax_equals_no_flag(tmp_path, capsys):
    common = ["run", "pope", "--model", "tiny", "--method", "vcd", "--limit", "8", "--batch-size", "4"]
    assert main([*common, "--out", str(tmp_path / "flag"), "--protocol", "argmax"]) == 0
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert _answers(tmp_path / "flag") == _answers(tmp_path / "plain")
    assert (tmp_path / "flag" / "metrics.json").read_text() == (tmp_path / "plain" / "metrics.json").read_text()
    assert _config(tmp_path / "flag") == _config(tmp_path / "plain")


def test_cli_paper_protocol_records_its_settings(tmp_path, capsys, tiny):
    out = tmp_path / "paper"
    argv = [
        "run",
        "pope",
        "--model",
        "tiny",
        "--method",
        "avisc",
        "--protocol",
        "paper",
        "--seed",
        "0",
        "--limit",
        "8",
        "--batch-size",
        "8",
        "--max-new-tokens",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "protocol paper, parser avisc" in capsys.readouterr().out
    config = _config(out)
    assert config["protocol"] == "paper" and config["prompt_style"] == "llava_v1"
    assert config["scoring"] == {"parser": "avisc"}
    # --max-new-tokens overrides the protocol's 64; only what AvisC reads (no VCD noise step, no M3ID decay)
    assert config["decode"] == {**LLAVA_PAPER, "max_new_tokens": 4, "alpha": 2.5}
    task = build_task("pope", limit=8, seed=0)
    expected = generate(
        *tiny,
        [task.load_image(q.image) for q in task.questions],
        [q.text for q in task.questions],
        method="avisc",
        prompt_style="llava_v1",
        batch_size=8,
        seed=0,
        alpha=2.5,
        **(LLAVA_PAPER | dict(max_new_tokens=4)),
    )
    assert _answers(out) == expected


@pytest.mark.parametrize("method, alpha", [("avisc", 2.5), ("vcd", 1.0), ("m3id", None), ("sample", None)])
def test_paper_settings_for_llava(method, alpha):
    chosen = resolve_protocol("paper", method=method, model_name="tiny")
    assert (chosen.prompt_style, chosen.parser) == ("llava_v1", "avisc")
    assert chosen.decode == LLAVA_PAPER | ({} if alpha is None else {"alpha": alpha})


def test_paper_settings_for_instructblip(tmp_path, instructblip_case):
    folder = save_model_folder(tmp_path / "ib", instructblip_case.model, instructblip_case.processor)
    assert model_kind(str(folder)) == model_kind(model=instructblip_case.model) == "instructblip"
    chosen = resolve_protocol("paper", method="avisc", model_name=str(folder))
    assert (chosen.prompt_style, chosen.parser) == ("raw", "avisc")
    assert chosen.decode == INSTRUCTBLIP_PAPER | {"alpha": 3.0}
    assert resolve_protocol("paper", method="vcd", model=instructblip_case.model).decode["alpha"] == 1.0


def test_explicit_values_override_the_protocol(tmp_path):
    runner.run_benchmark(
        "pope",
        out_dir=tmp_path,
        protocol="paper",
        parser="official",
        prompt_style="hf",
        alpha=0.5,
        max_new_tokens=2,
        **POPE,
    )
    config = _config(tmp_path)
    assert config["scoring"]["parser"] == "official" and config["prompt_style"] == "hf"
    assert config["decode"]["alpha"] == 0.5 and config["decode"]["do_sample"] is True


def test_resume_under_another_protocol_is_refused(tmp_path):
    runner.run_benchmark("pope", out_dir=tmp_path, **POPE)
    with pytest.raises(ConfigMismatch, match="protocol: 'argmax' there, 'paper' here"):
        runner.run_benchmark("pope", out_dir=tmp_path, protocol="paper", **POPE)


def test_unknown_protocol_is_named(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown protocol 'vcd'; expected one of \('argmax', 'paper', 'official'\)"):
        runner.run_benchmark("pope", out_dir=tmp_path / "out", protocol="vcd", **POPE)
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        main(["run", "pope", "--model", "tiny", "--method", "avisc", "--out", str(tmp_path), "--protocol", "vcd"])
    assert "invalid choice: 'vcd'" in capsys.readouterr().err


def test_greedy_has_no_place_in_the_paper_protocol(tmp_path):
    with pytest.raises(ValueError, match="method='greedy' with do_sample=True"):
        runner.run_benchmark("pope", out_dir=tmp_path, protocol="paper", **(POPE | dict(method="greedy")))


@pytest.mark.parametrize("benchmark", ["pope", "mme", "amber"])
def test_the_paper_parser_is_avisc_recorder_on_every_benchmark(benchmark):
    """AvisC's recorder: a negation word or an "n't" anywhere means no, anything else yes."""
    parse = get_parser(benchmark, resolve_protocol("paper", method="avisc", model_name="tiny").parser)
    answers = {
        "Yes": "yes",
        "No, there is no cat.": "no",
        "There isn't one": "no",
        "I see a NO sign": "no",
        "A cat.": "yes",
        "Nothing": "yes",
    }
    assert {a: parse(a) for a in answers} == answers


# ------------------------------------------------------------------ question forms and "official"
# Lines in the official files' layouts: an MME release question file (``question<TAB>answer``,
# tests/fixtures/mme) and LLaVA's / RITUAL's MME question file (JSON lines, two-line ``text``).
RELEASE_LINES = [
    "Is there a dog in this image? Please answer yes or no.\tYes",
    "Is the cup on the left of the plate?  Please answer yes or no.\tNo",
]
LLAVA_LINES = [
    '{"question_id": "existence/1.jpg", "image": "existence/1.jpg", "text": "Is there a dog in this '
    'image?\\nAnswer the question using a single word or phrase.", "category": "existence"}',
    '{"question_id": "position/2.jpg", "image": "position/2.jpg", "text": "Is the cup on the left of '
    'the plate?\\nAnswer the question using a single word or phrase.", "category": "position"}',
]


def test_the_paper_mme_question_is_what_avisc_scripts_sent():
    """Release question -> LLaVA's file's text -> its first line (AvisC's mme_llava.py:112)."""
    for release, llava in zip(RELEASE_LINES, LLAVA_LINES):
        question = release.split("\t")[0]
        assert llava_mme_text(question) == json.loads(llava)["text"]
        assert mme_first_line(question) == json.loads(llava)["text"].split("\n")[0]
        assert "Please answer" not in mme_first_line(question) and mme_first_line(question).endswith("?")


def test_release_fixture_questions_lose_their_suffix_under_paper():
    lines = Path("tests/fixtures/mme/existence.txt").read_text(encoding="utf-8").splitlines()
    chosen = resolve_protocol("paper", method="avisc", benchmark="mme", model_name="tiny")
    send = question_form(chosen.question)
    for line in lines:
        question = line.split("\t")[1]
        assert send(question) == question.removesuffix(" Please answer yes or no.")
    assert (
        question_form(resolve_protocol("paper", method="avisc", benchmark="pope", model_name="tiny").question)(
            "Is there a cat in the image?"
        )
        == "Is there a cat in the image?"
    )


def test_paper_mme_run_sends_the_first_line(tmp_path, tiny, monkeypatch):
    """The runner sends the question form's text and records the form and the decoding."""
    sent = []
    original = runner.generate
    monkeypatch.setattr(runner, "generate", lambda *a, **k: sent.extend(a[3]) or original(*a, **k))
    runner.run_benchmark(
        "mme", out_dir=tmp_path, protocol="paper", max_new_tokens=2, **(POPE | dict(limit=2, batch_size=4))
    )
    task = build_task("mme", limit=2, seed=0)
    assert sent == [mme_first_line(q.text) for q in task.questions]
    config = _config(tmp_path)
    assert config["question_form"] == "mme_first_line" and config["decoding"] == "sampling"


@pytest.mark.parametrize("method", ["clearsight", "var", "pai"])
def test_one_pass_methods_sample_under_the_paper_protocol(tmp_path, tiny, method):
    """Under "paper" they draw tokens (as the config says), so seeds give different answers."""
    extra = {"pai_gamma": 1.0} if method == "pai" else {}  # PAI without its text-only branch: one pass
    for seed in (0, 1):
        runner.run_benchmark(
            "pope",
            out_dir=tmp_path / str(seed),
            protocol="paper",
            max_new_tokens=6,
            **(POPE | dict(method=method, seed=seed)),
            **extra,
        )
    configs = [_config(tmp_path / str(seed)) for seed in (0, 1)]
    assert all(c["decoding"] == "sampling" and c["decode"]["do_sample"] is True for c in configs)
    assert _answers(tmp_path / "0") != _answers(tmp_path / "1")


def test_official_clearsight_pope_is_its_script(tmp_path, tiny, monkeypatch):
    chosen = resolve_protocol("official", method="clearsight", benchmark="pope", model_name="tiny")
    assert (chosen.prompt_style, chosen.parser, chosen.question) == ("vicuna_v1", "official", "clearsight_pope")
    assert chosen.decode["do_sample"] is False and chosen.decode["max_new_tokens"] == 1024
    sent = []
    original = runner.generate
    monkeypatch.setattr(runner, "generate", lambda *a, **k: sent.extend(a[3]) or original(*a, **k))
    runner.run_benchmark(
        "pope", out_dir=tmp_path, protocol="official", max_new_tokens=2, **(POPE | dict(method="clearsight", limit=2))
    )
    assert all(q.endswith("? Please just answer yes or no.") for q in sent)
    config = _config(tmp_path)
    assert config["decoding"] == "argmax" and config["prompt_style"] == "vicuna_v1"
    assert config["decode"]["clearsight_enhance"] == 1.15 and config["decode"]["clearsight_suppress"] == 0.95


def test_official_only_samples_eight_tokens():
    pope = resolve_protocol("official", method="only", benchmark="pope", model_name="tiny")
    assert pope.decode["max_new_tokens"] == 8 and pope.decode["do_sample"] is True
    assert (pope.decode["beta"], pope.decode["only_gamma"], pope.parser) == (0.1, 0.2, "avisc")
    mme = resolve_protocol("official", method="only", benchmark="mme", model_name="tiny")
    assert (mme.decode["beta"], mme.decode["only_gamma"], mme.question) == (0.4, 0.25, "mme_llava_two_lines")


@pytest.mark.parametrize(
    "method, benchmark, reason",
    [
        ("pai", "pope", "chat-format question files"),
        ("greedy", "pope", "no paper's method"),
        ("clearsight", "mme", "POPE script for LLaVA-1.5 only"),
        ("var", "amber", "scores POPE only"),
        ("only", "amber", "no AMBER script"),
    ],
)
def test_official_without_a_source_is_refused(tmp_path, method, benchmark, reason):
    with pytest.raises(ValueError, match=f"no official protocol for method '{method}' on {benchmark}.*{reason}"):
        runner.run_benchmark(benchmark, out_dir=tmp_path / "out", protocol="official", **(POPE | dict(method=method)))
    assert not (tmp_path / "out").exists()


def test_official_for_avisc_is_the_paper_protocol():
    for benchmark in ("pope", "mme", "amber"):
        paper = resolve_protocol("paper", method="vcd", benchmark=benchmark, model_name="tiny")
        official = resolve_protocol("official", method="vcd", benchmark=benchmark, model_name="tiny")
        assert (official.name, official.decode, official.question) == ("official", paper.decode, paper.question)


def test_official_entries_name_real_methods_and_valid_options():
    from avisc_lib.settings import DecodeSettings

    entries = [(m.name, key) for m in registered() for key in m.official]
    assert {name for name, _ in entries} == {"clearsight", "var", "only"}
    for method, (benchmark, kind) in entries:
        chosen = resolve_protocol("official", method=method, benchmark=benchmark, model_name="tiny")
        assert kind == "llava" and chosen.name == "official"
        DecodeSettings(method=method, **chosen.decode)  # every value valid for its method


def test_cli_protocol_choices_and_help_come_from_protocols(capsys):
    with pytest.raises(SystemExit):
        main(["run", "pope", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "{" + ",".join(PROTOCOLS) + "}" in out
    assert all(f"{name}: {PROTOCOL_HELP[name].split()[0]}" in out for name in PROTOCOLS)
