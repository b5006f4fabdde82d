"""The registry of decoding methods: every list of methods and options is generated from it.

Built-in methods register themselves when :mod:`avisc_lib.methods` is imported, in the order the
package imports them; :func:`register` adds yours, :func:`load` imports a file or module that does.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .base import Method, Option

_METHODS: dict[str, Method] = {}
_LISTENERS: list[Callable[[], None]] = []


def register(method: Method) -> Method:
    """Add ``method``; a name already taken, or an option name declared differently, raises ``ValueError``."""
    if method.name in _METHODS:
        raise ValueError(f"a method named {method.name!r} is registered already")
    declared = {option.name: option for m in _METHODS.values() for option in m.options}
    clashes = [o.name for o in method.options if o.name in declared and declared[o.name] != o]
    if clashes:
        raise ValueError(
            f"method {method.name!r} declares options {clashes} that another method declares "
            "differently; share the Option object or rename yours"
        )
    _METHODS[method.name] = method
    for listener in _LISTENERS:
        listener()
    return method


def on_register(listener: Callable[[], None]) -> None:
    """Call ``listener()`` after every registration (what is generated from the registry refreshes)."""
    _LISTENERS.append(listener)


def get(name: str) -> Method:
    """The method registered as ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {tuple(_METHODS)} or a branch function")
    return _METHODS[name]


def registered() -> tuple[Method, ...]:
    """Every registered method, in registration order."""
    return tuple(_METHODS.values())


class Names(Sequence):
    """The registered method names, always current (a live view of the registry)."""

    def __getitem__(self, index):
        return tuple(_METHODS)[index]

    def __len__(self) -> int:
        return len(_METHODS)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_METHODS))

    def __contains__(self, name) -> bool:
        return name in _METHODS

    def __eq__(self, other) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return repr(tuple(_METHODS))


METHODS = Names()


def method_options() -> tuple[list[Option], list[Option]]:
    """``(shared, own)``: options read by several methods, then each method's own, in registration order."""
    seen: dict[str, tuple[Option, int]] = {}
    for method in _METHODS.values():
        for option in method.options:
            seen[option.name] = (option, seen.get(option.name, (option, 0))[1] + 1)
    shared = [o for o, count in seen.values() if count > 1]
    return shared, [o for o, count in seen.values() if count == 1]


def load(source: str | Path) -> None:
    """Import a Python file (``path/to/file.py``) or module (``package.module``) that registers methods."""
    text = str(source)
    if text.endswith(".py"):
        path = Path(text).resolve()
        if not path.is_file():
            raise ValueError(f"no method file at {path}")
        name = f"avisc_user_methods.{path.stem}"
        if name in sys.modules:
            return
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        importlib.import_module(text)
