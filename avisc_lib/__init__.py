"""AvisC (Attentional Vision Calibration) on Hugging Face vision-language models."""

from .models import known_models, load_model

__all__ = ["known_models", "load_model"]
__version__ = "0.1.0"
