"""The package version (scripts/release.py writes it, with pyproject.toml and the notebooks' pins)."""

__version__ = "0.2.0"
