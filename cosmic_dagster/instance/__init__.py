"""Dagster instance plug-ins named by ``dagster.yaml`` files (run launchers, the warm run worker).
The one place that may import Dagster internals (``dagster._``)."""
