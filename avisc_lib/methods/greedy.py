"""Greedy decoding: the argmax of the model's own logits, the reference every method is compared with."""

from .base import Method
from .registry import register

GREEDY = register(
    Method(
        "greedy",
        "the argmax of the model's logits",
        choice="argmax",
        no_official="greedy is no paper's method; use protocol='argmax'",
    )
)
