"""The Dagster layer: everything ``definitions.py`` loads (partitions, assets, checks, sensors,
resources per profile, pools, progress queries). Thin: the work happens in ``pipeline``."""
