"""The course around the library: what the notebooks run and show, kept apart from ``avisc_lib``.

``import avisc_lib`` loads the library alone; the notebooks import this package for their profiles
(which model, device and sizes), time budgets, experiment grids, study questions, plots, tables
and the paper's numbers.
"""

from .budget import Progress
from .profiles import Profile, environment_report, resolve_profile, session_plans

__all__ = ["Profile", "Progress", "environment_report", "resolve_profile", "session_plans"]
