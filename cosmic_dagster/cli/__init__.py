"""Operator layer: the ``cosmic-dagster`` command, the webserver's GraphQL client, the push trigger,
the demo and the deployment's processes. Talks to Dagster from outside (GraphQL, subprocesses)."""

from cosmic_dagster.cli.main import main

__all__ = ["main"]
