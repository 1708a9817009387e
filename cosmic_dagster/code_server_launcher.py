"""Deprecated path kept for ``dagster.yaml`` files written before 0.2
(``module: cosmic_dagster.code_server_launcher``).

Remove in 0.3; new homes name ``cosmic_dagster.instance.code_server_launcher``.
"""

from cosmic_dagster.instance.code_server_launcher import CodeServerRunLauncher

__all__ = ["CodeServerRunLauncher"]
