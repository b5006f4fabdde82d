"""A synthetic world of rendered scenes whose ground truth is known exactly.

Each scene is a 64x64 RGB image on a noisy light background holding 1-3 objects. An object
category is a coloured glyph ("red circle", "blue triangle", ...): 4 colours x 3 shapes = 12
categories. The scene prior is deliberately biased, like real photo collections:

* skewed category frequencies (red and circles are common, yellow and triangles rare), which
  makes POPE's *popular* negatives (frequent absent categories) meaningful;
* strong co-occurrence: with probability ``p_theme`` a scene is drawn from one colour theme
  (all its objects share a colour), which makes POPE's *adversarial* negatives (absent
  categories that co-occur with present ones) genuinely harder.

Everything is a pure function of ``(split, index)`` through numpy's ``SeedSequence``, so the
train, validation and test splits are disjoint and every scene can be re-rendered on demand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
COLOURS = {"red": (215, 40, 40), "green": (30, 160, 60), "blue": (40, 75, 215), "yellow": (225, 195, 20)}
SHAPES = ("circle", "square", "triangle")
CATEGORIES = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)
CATEGORY_ID = {name: i + 1 for i, name in enumerate(CATEGORIES)}  # 0 is background

# Relative frequencies: a colour weight times a shape weight (max/min ratio about 3).
COLOUR_WEIGHT = {"red": 1.0, "blue": 0.85, "green": 0.7, "yellow": 0.55}
SHAPE_WEIGHT = {"circle": 1.0, "square": 0.8, "triangle": 0.6}
SPLITS = {"train": 0, "validation": 1, "test": 2}
NOISE = 12  # amplitude of the uniform pixel noise on the background


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the scene prior. The defaults are the embedded model's world."""

    p_theme: float = 0.5  # probability that all objects of a scene share one colour
    n_objects: tuple[int, ...] = (1, 2, 3)
    n_objects_p: tuple[float, ...] = (0.25, 0.4, 0.35)
    radius: tuple[int, int] = (6, 9)  # inclusive; >= 6 px keeps shapes learnable at 8-px patches
    p_overlap: float = 0.15  # chance that an object may partly overlap earlier ones
    texture: int = 0  # amplitude of a smooth, object-free brightness field on the background (0: flat)


FLAT = WorldConfig()  # the embedded model's world: a flat, lightly noisy background


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    cx: int
    cy: int
    r: int

    @property
    def category(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def bbox(self) -> list[int]:
        """COCO-style ``[x, y, width, height]``."""
        return [self.cx - self.r, self.cy - self.r, 2 * self.r + 1, 2 * self.r + 1]


@dataclass
class Scene:
    """One rendered scene: the image, a per-pixel label map and its objects."""

    split: str
    index: int
    objects: list[SceneObject]
    background: tuple[int, int, int]
    seed: int = field(repr=False)
    texture: int = 0

    @property
    def categories(self) -> list[str]:
        return [o.category for o in self.objects]

    @cached_property
    def _rendered(self) -> tuple[Image.Image, np.ndarray]:
        return render(self)

    @property
    def image(self) -> Image.Image:
        return self._rendered[0]

    @property
    def label_map(self) -> np.ndarray:
        """``uint8[64, 64]``: 0 for background, else the id of the visible category."""
        return self._rendered[1]

    def annotation(self) -> dict:
        """A COCO-like record: image info plus one instance per object."""
        return {
            "image_id": f"{self.split}-{self.index:06d}",
            "width": IMAGE_SIZE,
            "height": IMAGE_SIZE,
            "objects": [
                {
                    "category": o.category,
                    "category_id": CATEGORY_ID[o.category],
                    "colour": o.colour,
                    "shape": o.shape,
                    "bbox": o.bbox,
                    "count": 1,
                }
                for o in self.objects
            ],
        }


def category_weights() -> np.ndarray:
    """Prior frequency of each category, ``float[12]`` summing to 1."""
    w = np.array([COLOUR_WEIGHT[c] * SHAPE_WEIGHT[s] for c in COLOURS for s in SHAPES])
    return w / w.sum()


def _rng(split: str, index: int, stream: int = 0) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    return np.random.default_rng(np.random.SeedSequence([SPLITS[split], index, stream]))


def make_scene(split: str, index: int, config: WorldConfig = WorldConfig()) -> Scene:
    """Sample scene ``index`` of ``split`` from the prior (deterministic)."""
    rng = _rng(split, index)
    n = int(rng.choice(config.n_objects, p=config.n_objects_p))
    weights = category_weights()
    if rng.random() < config.p_theme:
        colours = list(COLOURS)
        theme_w = np.array([COLOUR_WEIGHT[c] for c in colours])
        colour = colours[rng.choice(len(colours), p=theme_w / theme_w.sum())]
        pool = [i for i, name in enumerate(CATEGORIES) if name.startswith(colour + " ")]
    else:
        pool = list(range(len(CATEGORIES)))
    p = weights[pool] / weights[pool].sum()
    chosen = rng.choice(pool, size=min(n, len(pool)), replace=False, p=p)
    objects: list[SceneObject] = []
    for cat in chosen:
        colour, shape = CATEGORIES[cat].split()
        objects.append(_place(rng, colour, shape, objects, config))
    background = tuple(int(v) for v in rng.integers(165, 245, size=3))
    return Scene(split, index, objects, background, seed=int(rng.integers(2**31)), texture=config.texture)


def _place(rng, colour, shape, placed, config) -> SceneObject:
    """Place one object, avoiding (or, with ``p_overlap``, only partly allowing) overlap."""
    r = int(rng.integers(config.radius[0], config.radius[1] + 1))
    min_gap = 0.7 if rng.random() < config.p_overlap else 1.05
    for _ in range(100):
        cx, cy = (int(v) for v in rng.integers(r + 1, IMAGE_SIZE - r - 1, size=2))
        if all(np.hypot(cx - o.cx, cy - o.cy) >= min_gap * (r + o.r) for o in placed):
            break
    return SceneObject(colour, shape, cx, cy, r)


def _draw(draw: ImageDraw.ImageDraw, obj: SceneObject, fill) -> None:
    x, y, r = obj.cx, obj.cy, obj.r
    if obj.shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif obj.shape == "square":
        h = round(r * 0.85)
        draw.rectangle([x - h, y - h, x + h, y + h], fill=fill)
    else:
        draw.polygon([(x, y - r), (x - r, y + round(0.8 * r)), (x + r, y + round(0.8 * r))], fill=fill)


def texture_field(rng: np.random.Generator, amplitude: int, cells: int = 4) -> np.ndarray:
    """A smooth grey field ``float[64, 64]`` in ``[-amplitude, amplitude]``: a random ``cells`` x ``cells``
    grid upsampled bicubically, so that background patches differ within and across images."""
    grid = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    field_ = Image.fromarray(grid, "F").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    return amplitude * np.clip(np.asarray(field_), -1, 1)


def render(scene: Scene) -> tuple[Image.Image, np.ndarray]:
    """Render a scene to an RGB image and a label map (later objects occlude earlier ones)."""
    rng = np.random.default_rng(scene.seed)
    noise = rng.integers(-NOISE, NOISE + 1, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    if scene.texture:
        noise = noise + texture_field(rng, scene.texture)[..., None]
    pixels = np.clip(np.array(scene.background) + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    labels = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw_img, draw_lab = ImageDraw.Draw(image), ImageDraw.Draw(labels)
    for obj in scene.objects:
        _draw(draw_img, obj, COLOURS[obj.colour])
        _draw(draw_lab, obj, CATEGORY_ID[obj.category])
    return image, np.array(labels)


def patch_labels(label_map: np.ndarray, patch: int = 8) -> np.ndarray:
    """Soft per-patch class fractions, ``float32[(64/patch)**2, 13]`` (class 0 = background)."""
    g = label_map.shape[0] // patch
    blocks = label_map.reshape(g, patch, g, patch).transpose(0, 2, 1, 3).reshape(g * g, -1)
    onehot = np.eye(len(CATEGORIES) + 1, dtype=np.float32)[blocks]
    return onehot.mean(axis=1)


def object_tokens(scene: Scene, grid: int = 8) -> np.ndarray:
    """``bool[grid * grid]``: True for image tokens whose patch shows any object pixel.

    ``grid`` is the model's token grid over the (square) image: 8 for the tiny model, 24 for
    LLaVA-1.5, whose processor resizes the 64-px scene to 336 px.
    """
    objects = Image.fromarray(((scene.label_map > 0) * 255).astype(np.uint8))
    return np.asarray(objects.resize((grid, grid), Image.Resampling.BOX)).reshape(-1) > 0
