"""The code server's watch over dead run workers: an error is logged once per outage, never raised
(Dagster's cleanup thread dies on the first one; the e2e proof is in test_deployment_recovery)."""

from __future__ import annotations

import logging

import pytest
from dagster._grpc.server import DagsterApiServer

from cosmic_dagster.instance.code_server import outliving_errors


class Outage(Exception):
    pass


def test_errors_are_logged_once_per_outage_and_the_look_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    answers = iter([None, Outage("server closed the connection\nSQL: ..."), Outage("refused"), None, None])
    looks: list[object] = []

    def check(server: DagsterApiServer) -> None:
        looks.append(server)
        answer = next(answers)
        if answer is not None:
            raise answer

    look = outliving_errors(check)
    server = object.__new__(DagsterApiServer)  # the check is handed the server, never used here
    with caplog.at_level(logging.WARNING, logger="cosmic_dagster.code_server"):
        for _ in range(5):
            look(server)
    assert looks == [server] * 5
    assert [r.getMessage() for r in caplog.records] == [
        "cannot look for dead run workers (Outage: server closed the connection); "
        "looking again until it works",
        "looking for dead run workers again",
    ]
