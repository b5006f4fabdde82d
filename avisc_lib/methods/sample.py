"""Plain multinomial sampling from the model's own logits: the AvisC paper's "base"."""

from .base import Method
from .registry import register

SAMPLE = register(
    Method("sample", "plain multinomial sampling (the AvisC paper's 'base')", choice="sampling", avisc_family=True)
)
