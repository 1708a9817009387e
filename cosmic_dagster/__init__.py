"""cosmic-dagster: Dagster asset pipeline for COSMIC ptychography scans.

Domain packages (``ptycho``, ``transfer``, ``compute``, ``scans``, ``ledger``) never import
dagster; the Dagster layer (``assets``, ``checks``, ``sensors``, ``resources``, ``definitions``)
is a thin orchestration shell over them.
"""
