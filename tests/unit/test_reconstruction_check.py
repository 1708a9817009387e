"""The reconstruction asset check: a verdict's pass, doubt or failure as Dagster shows it."""

from __future__ import annotations

import dagster as dg

from cosmic_dagster.compute.protocol import JobOutcome
from cosmic_dagster.defs.checks import reconstruction_check
from cosmic_dagster.pipeline.stages import Reconstruction


def _check(summary: dict) -> dg.AssetCheckEvaluation:
    # an output on another machine (its folder is not visible here): judged from the summary
    result = Reconstruction(
        "k", "epie", {}, JobOutcome("1", "COMPLETED"), "/elsewhere", "/elsewhere/r.h5", summary, None
    )
    return reconstruction_check("k", result, max_object_error=0.15)


def test_a_doubtful_pass_is_a_warning_and_a_failure_an_error() -> None:
    base = {"finite": True, "verdict_ok": True, "verdict_reason": "Fourier error fell 9x"}
    clear = _check({**base, "verdict_closest": "coverage", "verdict_margin": 0.4})
    assert clear.passed and clear.severity == dg.AssetCheckSeverity.ERROR
    doubt = "doubtful: the model holds 0.905x the measured photons, within 5% of its limit"
    edge = _check(
        {**base, "verdict_doubt": doubt, "verdict_closest": "intensity_balance", "verdict_margin": 0.006}
    )
    assert not edge.passed and edge.severity == dg.AssetCheckSeverity.WARN
    assert doubt in (edge.description or "")
    assert edge.metadata["closest_signal"].value == "intensity_balance"
    failed = _check({**base, "verdict_ok": False, "verdict_reason": "diverged", "verdict_doubt": ""})
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
