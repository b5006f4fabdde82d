"""The course's outline: what each notebook teaches, what it needs first, its equations, its terms
and how long it runs.

    print(syllabus.header("04"))       # the markdown cell that opens notebook 04
    syllabus.runtimes()                 # minutes per notebook: CPU (measured), T4 and A100 (planned)

The runtimes are not written by hand. On CPU they are the wall times of the last ``make notebooks``
recorded in :data:`TIMES` (``python scripts/syllabus.py --times build/notebooks/times.txt``). On a
GPU they are the cost model's estimate (:mod:`.budget`) of the work the notebook does at the sizes
a GPU profile picks there (:func:`.profiles.default_limit`): the same plan the notebook prints
before it runs. ``scripts/syllabus.py`` writes :func:`header` into every notebook and
:func:`glossary_markdown` into ``GLOSSARY.md``; a test keeps both current.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import ablation, budget, experiments, profiles

TIMES = Path(__file__).resolve().parents[2] / "results" / "notebook_times.json"
MARKER = "<!-- syllabus: written by scripts/syllabus.py from avisc_lib/course/syllabus.py; edit it there -->"
GPUS = ("T4", "A100-40GB")  # the runtime columns: Colab's free GPU and a fast one
MODEL = "llava"
RESUMABLE = (*experiments.GRIDS, "07")  # notebooks whose benchmark runs keep run folders


@dataclass(frozen=True)
class Equation:
    """One rule of the series in LaTeX, with where it comes from."""

    name: str
    latex: str
    source: str  # markdown: paper, equation / section number where known, link


@dataclass(frozen=True)
class Lesson:
    """One notebook of the series."""

    number: str
    title: str
    objectives: tuple[str, ...]
    prerequisites: tuple[str, ...]
    equations: tuple[str, ...] = ()  # keys of EQUATIONS
    terms: tuple[str, ...] = ()  # keys of GLOSSARY


AVISC = "[AvisC](https://arxiv.org/abs/2405.17820) (Woo et al., 2024)"
VCD = "[VCD](https://arxiv.org/abs/2311.16922) (Leng et al., CVPR 2024)"

EQUATIONS = {
    "projector": Equation(
        "Image tokens",
        r"H_v = \operatorname{MLP}(Z_v), \quad Z_v = g(X_v), \qquad "
        r"\text{input} = [\,x_{\text{before}};\; H_v;\; x_{\text{after}}\,]",
        "[LLaVA](https://arxiv.org/abs/2304.08485) (Liu et al., NeurIPS 2023), Eq. (1), with the linear "
        "$W$ replaced by a two-layer MLP in [LLaVA-1.5](https://arxiv.org/abs/2310.03744): $g$ the CLIP "
        "vision tower, $X_v$ the image, $H_v$ its image tokens in the prompt's place of the image",
    ),
    "layers": Equation(
        "The layers that choose the blind tokens",
        r"s_l = \frac{\sum_i A_{l,i}}{\sum_m \sum_i A_{m,i}}, \qquad "
        r"\Lambda_P = \text{the fewest layers of largest } s_l \text{ with } \sum_{l \in \Lambda_P} s_l \ge P",
        f"{AVISC}, Eq. (5); $P$ is `layer_gamma` (0.5)",
    ),
    "blind": Equation(
        "The blind-token rule",
        r"v_i \text{ is blind} \iff a_i \ge \mu_a + \lambda\,\sigma_a, \qquad "
        r"a_i = \frac{1}{|\Lambda_P|}\sum_{l \in \Lambda_P} A_{l,i}",
        f"{AVISC}, Eq. (7); $A_{{l,i}}$: the answer position's attention on image token $i$ in layer "
        r"$l$, averaged over heads; $\lambda$ is `lam` (1.0)",
    ),
    "contrast": Equation(
        "The contrast",
        r"z = (1+\alpha)\,\ell(\cdot \mid v, x) - \alpha\,\ell(\cdot \mid v_b, x)",
        f"{AVISC}, Eq. (10): $\\ell$ the next-token logits, $v$ the image, $v_b$ the image with every "
        r"non-blind token zeroed, $x$ the prompt; $\alpha$ = 1 in the code, 2.5 (LLaVA) / 3 "
        "(InstructBLIP) in §4.1",
    ),
    "cut": Equation(
        "The plausibility cut",
        r"z_w \leftarrow -\infty \quad \text{where} \quad p(w \mid v, x) < \beta \max_u p(u \mid v, x)",
        f"the adaptive plausibility constraint of {VCD}, which AvisC, M3ID's re-implementation and "
        r"PAI apply too; $\beta$ = 0.1",
    ),
    "vcd_noise": Equation(
        "VCD's noised image",
        r"v_t = \sqrt{\bar\alpha_t}\, v + \sqrt{1-\bar\alpha_t}\,\epsilon, \quad \epsilon \sim N(0, I),"
        r" \quad \bar\alpha_t = \prod_{s \le t} (1-\beta_s), \quad t = 500 \text{ of } 1000",
        f"{VCD}, forward diffusion on the pixels; its contrast is the one above with $v_t$ in place of $v_b$",
    ),
    "m3id": Equation(
        "M3ID's weight",
        r"z = \log p(\cdot \mid v, x) + \frac{1-\gamma_t}{\gamma_t}\big(\log p(\cdot \mid v, x) - "
        r"\log p(\cdot \mid x)\big), \quad \gamma_t = e^{-0.02\,t}",
        "[M3ID](https://arxiv.org/abs/2403.14003) (Favero et al., CVPR 2024) as AvisC's code "
        "re-implements it (no uncertainty gate; the cut above instead); $t$ counts answer tokens from 1",
    ),
    "pai": Equation(
        "PAI's attention and refinement",
        r"s_{q,i} \leftarrow s_{q,i} + \alpha\,|s_{q,i}| \;\; (i \text{ an image token, layers } 2..31), \qquad "
        r"z = \gamma\big(\log p(\cdot \mid v, x) - \log p(\cdot \mid x)\big) + \log p(\cdot \mid x)",
        "[PAI](https://arxiv.org/abs/2407.21771) (Liu et al., ECCV 2024): $s$ the pre-softmax attention "
        r"logits of the answer position, $\alpha$ = 0.2, $\gamma$ = 1.1, then the cut",
    ),
    "only": Equation(
        "ONLY's scores",
        r"d = \lVert p(\cdot \mid v, x) - p_{\text{only}} \rVert_1, \quad z = \begin{cases} "
        r"\ell + \alpha_+\,\ell_{\text{only}} & d < \gamma \\ "
        r"(1+\alpha_-)\,\ell - \alpha_-\,\ell_{\text{only}} & \text{else}\end{cases}",
        "[ONLY](https://arxiv.org/abs/2507.00898) (Wan et al., ICCV 2025): $\\ell_{\\text{only}}$ the "
        "logits of a side branch built from one layer's edited attention, then the cut",
    ),
    "var": Equation(
        "VAR's sink dimensions",
        r"\phi(h)_d = \frac{|h_d|}{\sqrt{\frac{1}{D}\sum_{e} h_{e}^2}}, \quad "
        r"\text{token } j \text{ is a sink} \iff \phi(h_j)_d > \tau "
        r"\text{ in a dimension } d \text{ where BOS has } \phi > \tau",
        "[VAR](https://arxiv.org/abs/2503.03321) (Kang et al., ICLR 2025): $\\tau$ = 20; then attention "
        "is moved from the sinks to the image in image-centric heads",
    ),
    "pope": Equation(
        "POPE's metrics",
        r"\text{acc} = \frac{TP+TN}{n}, \quad P = \frac{TP}{TP+FP}, \quad R = \frac{TP}{TP+FN}, \quad "
        r"F_1 = \frac{2PR}{P+R}, \quad \text{yes-ratio} = \frac{TP+FP}{n}",
        "[POPE](https://arxiv.org/abs/2305.10355) (Li et al., EMNLP 2023); 'yes' is the positive class",
    ),
    "mme": Equation(
        "MME's score",
        r"\text{score} = 100\cdot\text{acc} + 100\cdot\text{acc}^{+}",
        "[MME](https://arxiv.org/abs/2306.13394) (Fu et al., 2023): per subtask, at most 200; "
        "acc over questions, acc+ over images with both questions right",
    ),
    "amber": Equation(
        "AMBER's scores",
        r"\text{CHAIR} = \frac{|\text{mentioned objects not in the image}|}{|\text{mentioned objects}|}, \quad "
        r"\text{AMBER} = \tfrac{1}{2}\big(100 - \text{CHAIR} + F_1\big)",
        "[AMBER](https://arxiv.org/abs/2311.07397) (Wang et al., 2023): CHAIR, Cover, Hal and Cog over "
        "captions, $F_1$ over the yes/no questions with 'no' as the positive class",
    ),
    "paired": Equation(
        "A paired comparison",
        r"\hat\Delta = \frac{n_{10} - n_{01}}{n}, \qquad p = P\big(|B - \tfrac{m}{2}| \ge |n_{10} - \tfrac{m}{2}|\big),"
        r" \; B \sim \text{Bin}(m, \tfrac12), \; m = n_{10} + n_{01}",
        "McNemar's exact test (McNemar, 1947) on the questions one method gets right and the other "
        "wrong ($n_{10}$, $n_{01}$); the intervals are Wilson's and a paired bootstrap",
    ),
}

GLOSSARY = {
    "blind token": "An image token that draws at least mean + λ·std of the answer position's image attention "
    "(AvisC). The paper finds them on background, carrying little about the objects asked for.",
    "plausibility cut": "Before a contrast picks a token, drop every token the original model finds implausible "
    "(probability below β times the top one), so that the contrast only re-ranks plausible answers.",
    "contrastive decoding": "Choosing the next token from the difference between the model's logits and those of "
    "a weakened second branch (a noised image, no image, only blind tokens), to cancel what both share.",
    "language prior": "What the language model would answer without looking: for POPE, a lean towards 'yes' for "
    "objects that often appear together with what is in the image.",
    "image token": "One of the vectors the projector makes from the vision tower's patches (576 for "
    "LLaVA-1.5, 32 Q-Former queries for InstructBLIP, 64 for the tiny model).",
    "acc+": "MME's per-image accuracy: an image counts when both of its questions (one true, one false) are "
    "answered right.",
    "CHAIR": "AMBER's share of the objects a caption mentions that are not in the image (lower is better).",
    "Cover": "AMBER's share of the image's annotated objects that a caption mentions (higher is better).",
    "Hal": "AMBER's share of captions with at least one hallucinated object.",
    "Cog": "AMBER's share of the hallucination-prone objects (those a model tends to imagine for the image) "
    "that a caption mentions.",
    "yes-ratio": "The share of 'yes' answers; 0.5 on POPE's balanced splits, above it when a model says yes "
    "too easily.",
    "Q-Former": "InstructBLIP's bridge between vision and language: 32 learned queries that attend to the "
    "image and become its image tokens.",
    "KV cache": "The keys and values of past positions kept between decode steps, so that each new token "
    "costs one position's forward; a second branch needs a cache of its own.",
    "prefill": "The first forward over the whole prompt (image tokens included); later steps add one token "
    "each from the KV cache.",
    "sink token": "A token that takes a large share of attention whatever the query, often with a few "
    "hidden dimensions of huge magnitude (massive activations); BOS is the classic one.",
    "massive activation": "A hidden-state entry orders of magnitude larger than the rest, in a few fixed "
    "dimensions; it acts as a fixed attention bias.",
    "register": "An extra learned token given to a vision transformer so that global information has a "
    "place to go; with registers the high-norm background tokens vanish (Darcet et al., 2023).",
    "argmax protocol": "Decoding with the argmax after the contrast (do_sample=False): deterministic, so a "
    "difference between methods is not sampling noise. The paper samples.",
    "confidence interval": "A range computed from the questions that would contain the true value in 95 % "
    "of repeated evaluations; Wilson's for accuracies, a bootstrap over questions for F1, CHAIR and scores.",
    "paired difference": "The difference of two methods on the same questions; its interval is far "
    "narrower than the two separate intervals suggest, because both face the same hard questions.",
    "detectable difference": "The smallest gain a run of n paired questions finds with 80 % power, given "
    "how often the two methods disagree.",
}

LESSONS = {
    "00": Lesson(
        "00",
        "Setup",
        (
            "resolve a run profile (model, device, precision, sizes) in one call",
            "load a LLaVA-style model through `avisc_lib.load_model` and ask it a first question",
            "read the environment report before trusting any number",
            "find where the image tokens sit in a prompt",
        ),
        ("Python and a notebook; nothing about AvisC yet",),
        equations=("projector",),
        terms=("image token", "prefill"),
    ),
    "01": Lesson(
        "01",
        "Attention bias",
        (
            "read the answer position's attention over the image tokens (`image_attention`)",
            "apply AvisC's layer choice and blind-token rule (`select_blind_tokens`)",
            "test the paper's premise: do blind tokens sit on background, and in the same places across images?",
        ),
        ("notebook 00", "attention in a transformer (softmax over keys)"),
        equations=("layers", "blind"),
        terms=("blind token", "image token", "sink token"),
    ),
    "02": Lesson(
        "02",
        "Blind-token ablation",
        (
            "zero or keep image tokens after the projector and read how the yes/no logits move",
            "compare blind tokens with a random set of the same size: the control the paper lacks",
            "tell a language-prior answer from a grounded one",
        ),
        ("notebook 01 (blind tokens)",),
        equations=("blind",),
        terms=("blind token", "language prior", "yes-ratio"),
    ),
    "03": Lesson(
        "03",
        "AvisC decoding",
        (
            "follow one token through AvisC: two branches, the contrast, the plausibility cut, the choice",
            "write `contrast_logits`, `plausibility_cut` and `select_blind_tokens` yourself, checked "
            "against the library",
            "write a second branch of your own and run it as a method",
            "see how α, β, λ and the layer share move one answer",
        ),
        ("notebooks 01 and 02", "logits, softmax and greedy decoding"),
        equations=("layers", "blind", "contrast", "cut", "m3id"),
        terms=("contrastive decoding", "plausibility cut", "KV cache", "argmax protocol"),
    ),
    "04": Lesson(
        "04",
        "POPE",
        (
            "run greedy, VCD, M3ID, AvisC and two controls on POPE's random, popular and adversarial splits",
            "read accuracies with 95 % intervals and paired differences against the baseline",
            "size a GPU run to resolve the paper's claimed gain (`AVISC_PLAN=power`)",
            "see how the answer parser and the decoding protocol move the numbers",
        ),
        ("notebook 03 (the methods)", "precision, recall and F1"),
        equations=("contrast", "vcd_noise", "m3id", "pope", "paired"),
        terms=("yes-ratio", "argmax protocol", "confidence interval", "paired difference", "detectable difference"),
    ),
    "05": Lesson(
        "05",
        "MME",
        (
            "score MME's hallucination subset (existence, count, position, colour) with acc and acc+",
            "put the seed-to-seed spread of sampled runs beside the differences between methods",
            "bootstrap an interval over images, stratified by subtask",
        ),
        ("notebook 04 (intervals and paired differences)",),
        equations=("mme", "contrast", "paired"),
        terms=("acc+", "confidence interval", "paired difference"),
    ),
    "06": Lesson(
        "06",
        "AMBER",
        (
            "score captions (CHAIR, Cover, Hal, Cog) and yes/no questions in one benchmark",
            "see whether a contrast that helps yes/no answers also shortens or cleans captions",
            "read paired differences of scores built from captions and questions together",
        ),
        ("notebook 04",),
        equations=("amber", "contrast", "paired"),
        terms=("CHAIR", "Cover", "Hal", "Cog", "confidence interval"),
    ),
    "07": Lesson(
        "07",
        "Beyond AvisC",
        (
            "find visual sink tokens by their massive activations (VAR) and compare them with blind tokens",
            "run one-pass attention methods (PAI, ClearSight, VAR, ONLY) beside the contrastive ones",
            "measure what each method costs per decode step",
        ),
        ("notebooks 01-04",),
        equations=("var", "pai", "only", "contrast"),
        terms=("sink token", "massive activation", "register", "Q-Former", "KV cache"),
    ),
}


# --------------------------------------------------------------------------- runtimes


def gpu_runs(notebook: str, limit: int | None) -> list[budget.Run]:
    """The work notebook ``notebook`` does under a GPU profile with ``limit`` questions per split,
    as the cost model counts it (studies of ``GPU_SAMPLES`` images are prefills: ``steps=1``)."""
    samples = profiles.GPU_SAMPLES
    if notebook in experiments.GRIDS:
        return experiments.notebook_runs(notebook, limit, "coco", model=MODEL)
    prefills = {  # images and questions answered by reading one forward's logits or attention
        "00": 1,
        "01": samples + 5,
        "02": (samples + 1) * len(ablation.CONDITIONS),
        "03": 1 + 16,  # the example, and one biased forward per (λ, layer share) of the slider grid
        "07": 16,  # the sink study
    }[notebook]
    runs = [budget.Run("pope", "greedy", prefills, steps=1, group="studies")]
    if notebook == "03":  # 6 hard questions and 2 captions per method, and the exercise's own branch
        shown = ("greedy", "vcd", "m3id", "avisc", *experiments.CONTROL_METHODS, "avisc")  # the last: your branch
        runs += [budget.Run("amber", m, 8, captions=2) for m in shown]
    if notebook == "07":
        runs += [spec.cost() for spec in experiments.beyond_grid("coco", limit)]
        runs += [budget.Run("pope", m, 16 * 3, steps=32, group="timing") for m in experiments.BEYOND_METHODS]
    return runs


def gpu_minutes(notebook: str, gpu: str) -> float:
    """Estimated minutes of ``notebook`` on ``gpu`` with LLaVA-1.5-7B at the GPU profile's sizes
    (4-bit where fp16 does not fit), model loading not included."""
    quantized = not budget.fits_fp16(gpu, MODEL, profiles.GPU_BATCH_SIZE)
    limit = profiles.default_limit(MODEL, gpu, quantized)
    runs = gpu_runs(notebook, limit)
    return budget.estimate(runs, gpu, MODEL, quantized=quantized, batch_size=profiles.GPU_BATCH_SIZE) / 60


def cpu_minutes() -> dict[str, float]:
    """Measured minutes per notebook on CPU with the embedded tiny model (:data:`TIMES`)."""
    if not TIMES.is_file():
        raise FileNotFoundError(f"{TIMES} is missing: run `make notebooks`, then scripts/syllabus.py --times")
    return json.loads(TIMES.read_text())["minutes"]


def runtimes() -> pd.DataFrame:
    """Minutes per notebook: CPU measured, and each of :data:`GPUS` estimated."""
    cpu = cpu_minutes()
    rows = {nb: {"CPU, tiny (measured)": cpu.get(nb)} | {g: gpu_minutes(nb, g) for g in GPUS} for nb in LESSONS}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("notebook")


def runtime_markdown() -> str:
    """:func:`runtimes` as a markdown table (TEACHING.md)."""
    table = runtimes()
    rows = ["| notebook | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
    for number, minutes in table.iterrows():
        rows.append(f"| {number} {LESSONS[number].title} | " + " | ".join(minutes_text(m) for m in minutes) + " |")
    return "\n".join(rows) + "\n"


def minutes_text(value: float | None) -> str:
    """Minutes as the outline words them ("under a minute", "about 7.7 min")."""
    if value is None or value != value:
        return "not measured yet"
    return "under a minute" if value < 1 else f"about {value:.0f} min" if value >= 10 else f"about {value:.1f} min"


# --------------------------------------------------------------------------- markdown


def header(notebook: str, cpu: dict[str, float] | None = None) -> str:
    """The markdown cell that opens ``notebook``: objectives, prerequisites, runtime, equations, terms.
    ``cpu``: :func:`cpu_minutes`, when the caller has read them already."""
    lesson = LESSONS[notebook]
    cpu = (cpu_minutes() if cpu is None else cpu).get(notebook)
    gpu = ", ".join(f"{g} {minutes_text(gpu_minutes(notebook, g))}" for g in GPUS)
    lines = [
        MARKER,
        "**You will**",
        "",
        *(f"- {objective}" for objective in lesson.objectives),
        "",
        f"**Before this notebook:** {'; '.join(lesson.prerequisites)}.",
        "",
        f"**Runtime:** CPU with the embedded tiny model {minutes_text(cpu)} (measured by `make notebooks` on "
        f"2 cores); LLaVA-1.5-7B at the GPU profile's sizes {gpu} (the cost model's plan, as "
        "`profile.plan` prints it; loading the weights comes on top)."
        + (" Reruns resume from their run folders." if notebook in RESUMABLE else ""),
    ]
    if lesson.equations:
        lines += ["", "**Equations**", ""]
        for key in lesson.equations:
            eq = EQUATIONS[key]
            lines += [f"*{eq.name}*, {eq.source}:", "", f"$${eq.latex}$$", ""]
    if lesson.terms:
        terms = "\n".join(f"- **{term}**: {GLOSSARY[term]}" for term in lesson.terms)
        lines += ["", f"<details><summary>Terms used here</summary>\n\n{terms}\n\n</details>"]
    return "\n".join(lines).rstrip() + "\n"


def glossary_markdown() -> str:
    """``GLOSSARY.md``: every term, alphabetically, with the notebooks that use it."""
    lines = [
        "# Glossary",
        "",
        "Written by `scripts/syllabus.py` from `avisc_lib/course/syllabus.py`. Each term names the notebooks",
        "that use it.",
        "",
    ]
    for term in sorted(GLOSSARY, key=str.lower):
        used = [nb for nb, lesson in LESSONS.items() if term in lesson.terms]
        where = f" *(notebook{'s' * (len(used) > 1)} {', '.join(used)})*" if used else ""
        lines.append(f"- **{term}**: {GLOSSARY[term]}{where}")
    return "\n".join(lines) + "\n"
