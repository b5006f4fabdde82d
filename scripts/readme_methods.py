"""Write the generated method lists: README.md's method table and custom_generate/README.md's list.

    python scripts/readme_methods.py     # after adding or changing a method

Both come from the method registry (:mod:`avisc_lib.methods`); tests/methods/test_method_lists.py
fails while either is stale.
"""

from __future__ import annotations

from pathlib import Path

from avisc_lib.integrations.hf_generate import write_card_methods
from avisc_lib.settings import method_table

ROOT = Path(__file__).resolve().parents[1]
TABLE_START = "<!-- method table: generated from the method registry by scripts/readme_methods.py -->"
TABLE_END = "<!-- end of method table -->"


def with_table(text: str) -> str:
    """``text`` with the block between the table markers replaced by :func:`method_table`."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"no {TABLE_START!r} ... {TABLE_END!r} block")
    return text[:start] + f"{TABLE_START}\n{method_table()}\n{TABLE_END}" + text[end + len(TABLE_END) :]


def main() -> None:
    readme = ROOT / "README.md"
    readme.write_text(with_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
    write_card_methods(ROOT / "custom_generate" / "README.md")
    print(f"wrote the method lists of {readme} and custom_generate/README.md")


if __name__ == "__main__":
    main()
