"""Deprecated path kept for ``dagster.yaml`` files written before 0.2 (``module: cosmic_dagster.launcher``).

Remove in 0.3; new homes name ``cosmic_dagster.instance.warm_launcher``.
"""

from cosmic_dagster.instance.warm_launcher import WarmRunLauncher

__all__ = ["WarmRunLauncher"]
