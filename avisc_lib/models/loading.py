"""Load a vision-language model and its processor by name: the embedded tiny LLaVA or a real one.

    model, processor = load_model("tiny")                         # ships with the package, CPU
    model, processor = load_model("llava-hf/llava-1.5-7b-hf")      # Colab / GPU, fp16
    model, processor = load_model("Salesforce/instructblip-vicuna-7b", quantization="4bit")

Weights are read from safetensors only and remote code is never trusted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import weakref
from importlib import resources
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoProcessor,
    BitsAndBytesConfig,
    InstructBlipForConditionalGeneration,
    LlavaForConditionalGeneration,
    PreTrainedModel,
    ProcessorMixin,
)

from . import compat

TINY = "tiny"
# Hub ids this project knows how to drive, with their model class.
HUB_MODELS = {
    "llava-hf/llava-1.5-7b-hf": LlavaForConditionalGeneration,
    "llava-hf/llava-1.5-13b-hf": LlavaForConditionalGeneration,
    "Salesforce/instructblip-vicuna-7b": InstructBlipForConditionalGeneration,
    "Salesforce/instructblip-vicuna-13b": InstructBlipForConditionalGeneration,
}
ALIASES = {"llava": "llava-hf/llava-1.5-7b-hf", "instructblip": "Salesforce/instructblip-vicuna-7b"}
CLASSES_BY_TYPE = {"llava": LlavaForConditionalGeneration, "instructblip": InstructBlipForConditionalGeneration}
QUANTIZATIONS = (None, "4bit", "8bit")


def known_models() -> list[str]:
    """Every name ``load_model`` accepts besides local paths."""
    return [TINY, *ALIASES, *HUB_MODELS]


def tiny_model_path() -> Path:
    """Folder of the embedded tiny LLaVA inside the installed package."""
    return Path(str(resources.files("avisc_lib.tiny") / "weights"))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (as the paper ran), fp32 on CPU (fp16 matmuls are slow or missing there)."""
    return torch.float16 if device.type == "cuda" else torch.float32


def resolve(name: str) -> tuple[str | Path, type[PreTrainedModel]]:
    """Map a model name to where its files are and which class loads them."""
    if not isinstance(name, (str, Path)):
        raise TypeError(f"model name must be a string or a path, got {type(name).__name__}")
    name = ALIASES.get(str(name), name)
    if name == TINY:
        path = tiny_model_path()
        if not (path / "model.safetensors").exists():
            raise FileNotFoundError(
                f"the embedded tiny model is missing from {path}; reinstall the package or train it "
                "with `python -m avisc_lib.tiny.train --install`"
            )
        return path, LlavaForConditionalGeneration
    if name in HUB_MODELS:
        return name, HUB_MODELS[name]
    path = Path(name).expanduser()
    if path.is_dir():
        return path, _class_from_config(path)
    hint = ", ".join(known_models())
    looks_like_path = str(name).startswith((".", "/", "~")) or (len(path.parts) > 1 and path.parent.is_dir())
    if looks_like_path:
        raise FileNotFoundError(f"no model folder at {str(path)!r}; known model names: {hint}")
    raise ValueError(f"unknown model {str(name)!r}; known model names: {hint}, or a local folder")


def _class_from_config(path: Path) -> type[PreTrainedModel]:
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{path} has no config.json, so it is not a saved model folder")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type not in CLASSES_BY_TYPE:
        raise ValueError(f"{path} holds a {model_type!r} model; supported model types: {sorted(CLASSES_BY_TYPE)}")
    return CLASSES_BY_TYPE[model_type]


def _quantization_config(quantization: str | None, device: torch.device, compute_dtype: torch.dtype):
    """bitsandbytes settings: nf4 "4bit" (CUDA, or CPU with CPU kernels as in bitsandbytes 0.50.2) or "8bit" (CUDA)."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if quantization is None:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(f"{quantization} loading needs `pip install bitsandbytes`")
    if device.type != "cuda" and quantization != "4bit":
        raise RuntimeError(f"{quantization} loading needs a CUDA GPU; on {device.type} only '4bit' is supported")
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_type="nf4")


def load_model(
    name: str = TINY,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    quantization: str | None = None,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load ``(model, processor)`` in eval mode.

    ``name``: "tiny" (embedded), "llava" / "instructblip" (the 7B checkpoints), a known hub id,
    or a local folder saved with ``save_pretrained``. ``device`` defaults to CUDA when
    available; ``dtype`` to fp16 on CUDA and fp32 on CPU; ``quantization`` "4bit" (nf4, compute in
    ``dtype``; CUDA or CPU) or "8bit" (CUDA) needs bitsandbytes. Raises ``ValueError`` when the
    processor's image-token count differs from the model's (a mismatched folder).
    """
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    quant = _quantization_config(quantization, device, dtype)
    source, model_class = resolve(name)
    processor = compat.normalise_processor(AutoProcessor.from_pretrained(source, trust_remote_code=False))
    check_image_tokens(AutoConfig.from_pretrained(source, trust_remote_code=False), processor, source)
    model = model_class.from_pretrained(
        source,
        dtype=dtype,
        use_safetensors=True,
        trust_remote_code=False,
        quantization_config=quant,
        device_map={"": device} if quant is not None else None,
    )
    if quant is None:
        model.to(device)
    stop_at_tokenizer_eos(model, processor)
    return model.eval(), processor


def stop_at_tokenizer_eos(model: PreTrainedModel, processor: ProcessorMixin) -> None:
    """Add the tokenizer's end token to the generation config's EOS ids when it is missing there.

    InstructBLIP-Vicuna's configs name ``eos_token_id = 1`` while its tokenizer ends answers with
    "</s>" (2), where the original LAVIS code stopped; without this, decoding runs past the answer.
    """
    eos = processor.tokenizer.eos_token_id
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if eos is not None and eos not in ids:
        model.generation_config.eos_token_id = [*ids, eos]


def model_image_tokens(config) -> int:
    """How many image features the model scatters into a prompt: one per image token.

    LLaVA: one per patch, ``(image_size / patch_size)^2``, plus the CLS token under the "full"
    strategy; InstructBLIP: one per Q-Former query.
    """
    if config.model_type == "instructblip":
        return config.num_query_tokens
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2 + (config.vision_feature_select_strategy == "full")


def processor_image_tokens(config, processor: ProcessorMixin) -> int:
    """How many image tokens ``processor`` puts in a prompt for one image (it is run on a blank one)."""
    text = str(processor.image_token) if config.model_type == "llava" else "?"
    ids = processor(images=Image.new("RGB", (8, 8)), text=text, return_tensors="pt")["input_ids"]
    return int((ids == compat.image_token_id(config)).sum())


def check_image_tokens(config, processor: ProcessorMixin, source: str | Path) -> None:
    """Raise ``ValueError`` when the processor's image-token count differs from the model's."""
    expected, found = model_image_tokens(config), processor_image_tokens(config, processor)
    if found != expected:
        raise ValueError(
            f"{source}: the processor puts {found} image tokens in a prompt but the model produces "
            f"{expected} image features; the processor's settings (patch_size, "
            "num_additional_image_tokens, image size, num_query_tokens) do not match the model's config"
        )


# --------------------------------------------------------------------------- weights provenance

_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> weights_hash, per model object
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")
WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json")


def weights_hash(model: PreTrainedModel | str | Path) -> str:
    """sha256 (hex) naming the weights of ``model``, or of a name ``load_model`` accepts.

    Over the safetensors files the weights come from (``model.name_or_path``: a folder, "tiny",
    or a hub id in the Hugging Face cache, where a file's blob name is its sha256, so 13 GB are not
    re-read); a model without such files (built in memory) is hashed over its parameters and
    buffers in name order. A name whose hub files are not cached yet is downloaded, as
    ``load_model`` would. Memoised per model object.
    """
    if isinstance(model, (str, Path)):
        files = _weight_files(str(resolve(model)[0]), download=True)
        if not files:
            raise FileNotFoundError(f"no safetensors weights found for model {str(model)!r}")
        return _files_hash(files)
    if model not in _HASHES:
        files = _weight_files(str(getattr(model, "name_or_path", "") or ""), download=False)
        _HASHES[model] = _files_hash(files) if files else _parameters_hash(model)
    return _HASHES[model]


def _weight_files(name: str, download: bool) -> list[Path]:
    """The safetensors files of a folder, "tiny"/an alias, or a hub id (cached; else downloaded
    when ``download``); [] when none are known."""
    name = ALIASES.get(name, name)
    if not name:
        return []
    folder = tiny_model_path() if name == TINY else Path(name).expanduser()
    if not folder.is_dir():
        folder = _hub_snapshot(name, download)
    return sorted(folder.glob("*.safetensors")) if folder is not None else []


def _hub_snapshot(repo: str, download: bool) -> Path | None:
    """The cached snapshot folder of hub repo ``repo`` with its weight files (None if not cached)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, allow_patterns=list(WEIGHT_FILES), local_files_only=True))
    except HFValidationError:  # not a repo id
        return None
    except LocalEntryNotFoundError:
        return Path(snapshot_download(repo, allow_patterns=list(WEIGHT_FILES))) if download else None


def _files_hash(files: list[Path]) -> str:
    """sha256 over ``name sha256`` lines of ``files``: a cache blob's name where it is a sha256,
    else the file's content hashed."""
    digest = hashlib.sha256()
    for path in files:
        blob = path.resolve()
        sha = blob.name if _SHA256_NAME.fullmatch(blob.name) else _file_sha256(blob)
        digest.update(f"{path.name} {sha}\n".encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _parameters_hash(model: torch.nn.Module) -> str:
    """sha256 over every state-dict entry (name, dtype, shape, bytes) in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().contiguous()
        digest.update(f"{name} {data.dtype} {tuple(data.shape)}\n".encode())
        digest.update(data.reshape(-1).view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()
