"""The stages of a scan (register, copy, reconstruct) over the transfer and compute adapters,
without Dagster: the Dagster layer calls them and turns their outcomes into events."""
