"""Per-scan asset checks, evaluated inside the batch step and reported per partition."""

from __future__ import annotations

import math
from pathlib import Path

import dagster as dg

from cosmic_dagster import names
from cosmic_dagster.pipeline.stages import Reconstruction, ScanPipeline
from cosmic_dagster.ptycho.quality import assess_output
from cosmic_dagster.transfer.protocol import CopyOutcome


def _evaluation(
    asset: str,
    name: str,
    key: str,
    passed: bool,
    description: str,
    metadata: dict,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(asset),
        check_name=name,
        passed=passed,
        metadata={k: dg.MetadataValue.text(str(v)) if v is None else v for k, v in metadata.items()},
        partition=key,
        target_materialization_data=None,
        severity=severity,
        description=description,
    )


def copy_check(pipeline: ScanPipeline, key: str, outcome: CopyOutcome) -> dg.AssetCheckEvaluation:
    """The destination checksum equals the source's (or Globus verified it and sizes agree)."""
    source = pipeline.registration(key)
    if outcome.checksum_algorithm == "sha256" and outcome.checksum is not None:
        passed = outcome.checksum == source.sha256 and outcome.verified
        why = "sha256 at destination equals source" if passed else "sha256 differs from the source"
    else:
        passed = outcome.verified and outcome.bytes in (0, source.bytes)
        why = "verified by the transfer service, sizes agree" if passed else "copy not verified"
    return _evaluation(
        names.NERSC_COPY,
        names.COPY_CHECK,
        key,
        passed,
        why,
        {
            "source_sha256": source.sha256,
            "destination_checksum": outcome.checksum,
            "checksum_algorithm": outcome.checksum_algorithm,
        },
    )


def reconstruction_check(
    key: str, result: Reconstruction, *, max_object_error: float
) -> dg.AssetCheckEvaluation:
    """Output exists and is finite; quality within bounds (a diverged reconstruction fails).

    A pass the verdict calls doubtful (a signal at the edge of its limit) fails as a *warning*:
    the image may be used, but an operator should look at it first."""
    summary = result.summary
    problems: list[str] = []
    output = Path(result.output)
    if output.parent.exists():  # visible from here (local, own cluster): look at the file itself
        if not output.is_file():
            problems.append(f"output file missing: {output}")
        elif not assess_output(output).finite:
            problems.append("output contains non-finite values")
    if not summary.get("finite", False):
        problems.append("engine reported non-finite values")
    if not summary.get("verdict_ok", False):
        problems.append(f"verdict: {summary.get('verdict_reason', 'not ok')}")
    figures = summary.get("quality") or {}
    object_error = summary.get("object_error")
    if object_error is not None and not (math.isfinite(object_error) and object_error <= max_object_error):
        problems.append(f"object error {object_error:.3f} > {max_object_error}")
    doubt = summary.get("verdict_doubt") or ""
    severity = dg.AssetCheckSeverity.ERROR
    if problems:
        description = "; ".join(problems)
    elif doubt:
        description, severity = f"verdict ok but {doubt}: look at the image", dg.AssetCheckSeverity.WARN
    else:
        description = "finite output, converged, within bounds"
    return _evaluation(
        names.RECONSTRUCTION,
        names.QUALITY_CHECK,
        key,
        not problems and not doubt,
        description,
        {
            "fourier_error_final": summary.get("fourier_error_final"),
            "fourier_error_drop": summary.get("fourier_error_drop"),
            "object_error": object_error,
            "max_object_error": max_object_error,
            "error_to_noise_floor": figures.get("error_to_noise_floor"),
            "failed_signal": summary.get("verdict_signal") or None,
            "closest_signal": summary.get("verdict_closest") or None,
            "closest_signal_margin": summary.get("verdict_margin"),
        },
        severity,
    )
