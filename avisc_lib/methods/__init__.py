"""Decoding methods, one file each, and the registry every list of methods is generated from.

Importing this package registers the built-in methods in the order below (the order of every list
of methods). Add your own with :func:`register` (see :class:`Method`), from any file.
"""

# Importing a method's file registers it.
# isort: off
from . import greedy, sample, avisc, vcd, m3id, controls, pai, clearsight, var, only  # noqa: F401 (each registers itself)

# isort: on
from .base import Branch, BranchContext, BranchInputs, Method, Option, Passes, image_branch
from .registry import METHODS, get, load, on_register, register, registered

DEFAULT_METHOD = avisc.AVISC.name  # the library's method, where a caller names none

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "Branch",
    "BranchContext",
    "BranchInputs",
    "Method",
    "Option",
    "Passes",
    "get",
    "image_branch",
    "load",
    "on_register",
    "register",
    "registered",
]
