"""raw_scan -> nersc_copy -> reconstruction, one partition per scan, many scans per run.

One multi-asset step runs the three stages for a batch of scans (a partition range) so that one
Globus task and one batched job poll serve the whole batch, while every scan still gets its own
materializations and check results. A bad scan never blocks its neighbours: it is skipped by the
later stages and the step fails at the end, naming each failed scan and why, so exactly those
partitions show as failed (and "rerun failed" picks exactly them).
"""

import base64
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from cosmic_dagster import names
from cosmic_dagster.compute.batched_engine import DEVICES
from cosmic_dagster.compute.engines import DEFAULT_ENGINE, engine_names, params_from
from cosmic_dagster.defs.checks import copy_check, reconstruction_check
from cosmic_dagster.defs.partitions import scans
from cosmic_dagster.defs.pools import pool_slot
from cosmic_dagster.defs.resources import ArrivalsResource, ComputeResource, StateResource, TransferResource
from cosmic_dagster.domain.alerts import ScanFailure, describe_failures
from cosmic_dagster.pipeline.stages import ReconPlan, Reconstruction, ScanPipeline, StageError

RAW = dg.AssetKey(names.RAW_SCAN)
COPY = dg.AssetKey(names.NERSC_COPY)
RECON = dg.AssetKey(names.RECONSTRUCTION)


class ReconstructionConfig(dg.Config):
    """Per-run reconstruction parameters (Launchpad / run config), defaults = routine processing."""

    engine: Literal[engine_names()] = Field(  # type: ignore[valid-type]
        default=DEFAULT_ENGINE,
        description="reconstruction engine: epie (our numpy ePIE, every profile), batched (mini-batch "
        "PIE, GPU where the job has one), ptychocam or cdtools (NERSC wrappers; cdtools runs with its "
        "own defaults, none of the fields below)",
    )
    iterations: int = Field(default=100, description="iterations to run [epie, batched, ptychocam]")
    probe_refine_start: int = Field(
        default=5, description="iteration from which the probe is refined too [epie, batched]"
    )
    seed: int = Field(default=0, description="random seed of the initial object and probe [epie, batched]")
    probe_defocus_um: float | None = Field(
        default=None,
        description="fix the probe defocus (µm, signed, cdtools' convention); unset: the engine "
        "chooses it from the data (auto-focus) and records its choice [epie, batched]",
    )
    average_iterations: int | None = Field(
        default=None,
        description="sweeps after the iterations that average the object over all frames, the "
        "probe held (0: none); unset: the engine's default [epie]",
    )
    likelihood_iterations: int | None = Field(
        default=None,
        description="iterations of the Poisson-likelihood finish of the object and the probe "
        "(0: none); unset: the engine's default [epie]",
    )
    device: Literal[DEVICES] = Field(  # type: ignore[valid-type]
        default="auto",
        description="where the engine runs (auto: the job's GPU if it has one) [batched]",
    )
    batch_size: int | None = Field(
        default=None,
        description="frames per batch (unset: a quarter of the scan, at most 512) [batched]",
    )
    illumination_refine_period: int = Field(
        default=0, description="refine the illumination every N iterations, 0 = never [ptychocam]"
    )
    background_refine_period: int = Field(
        default=0, description="refine the background every N iterations, 0 = never [ptychocam]"
    )
    enforce_illumination_mask: bool = Field(
        default=False, description="keep the illumination inside its mask (-M) [ptychocam]"
    )
    force: bool = Field(
        default=False,
        description="submit a new job even if one with these parameters completed [all engines]",
    )
    max_object_error: float = Field(
        default=0.10,
        description="quality check bound: largest object error accepted where the truth is known "
        "(simulated scans) [all engines]",
    )

    def params(self) -> Any:
        """The chosen engine's parameters: the fields of this config that its class has."""
        return params_from(self.engine, self.model_dump())


SPECS = [
    dg.AssetSpec(
        RAW,
        partitions_def=scans,
        skippable=True,
        group_name="cosmic",
        description="A COSMIC scan file at the beamline: registered, validated as CXI, checksummed.",
    ),
    dg.AssetSpec(
        COPY,
        deps=[RAW],
        partitions_def=scans,
        skippable=True,
        group_name="cosmic",
        description="The scan's verified copy at NERSC (Globus, or a local folder in the local profile).",
    ),
    dg.AssetSpec(
        RECON,
        deps=[COPY],
        partitions_def=scans,
        skippable=True,
        group_name="cosmic",
        description="The ptychographic reconstruction of the scan, with quality figures and a preview.",
    ),
]
CHECK_SPECS = [
    dg.AssetCheckSpec(
        names.COPY_CHECK, asset=COPY, description="destination checksum equals the source checksum"
    ),
    dg.AssetCheckSpec(
        names.QUALITY_CHECK,
        asset=RECON,
        description="output exists, is finite, and the quality figures are within bounds",
    ),
]


@dg.multi_asset(
    specs=SPECS,
    check_specs=CHECK_SPECS,
    can_subset=True,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=50),
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL),
    name=names.SCAN_STEP,
)
def scan_pipeline(
    context: dg.AssetExecutionContext,
    config: ReconstructionConfig,
    arrivals: ArrivalsResource,
    state: StateResource,
    transfer: TransferResource,
    compute: ComputeResource,
) -> Iterator[Any]:
    ledger = state.ledger()
    pipeline = ScanPipeline(
        beamline_root=arrivals.beamline_root,
        ledger=ledger,
        transfer=transfer.adapter(ledger),
        compute=compute.adapter(ledger),
        recon_root=compute.recon_root,
        preview_dir=state.preview_dir,
        python=compute.python,
        setup=compute.setup,
        gpu_setup=compute.gpu_setup,
        remote_lister=arrivals.lister() if arrivals.remote() else None,
    )
    selected = context.selected_asset_keys
    keys = list(context.partition_keys)
    failed: dict[str, ScanFailure] = {}
    # A batch run is tagged with its first and last scan only: name them all in its log.
    context.log.info(f"{len(keys)} scan(s) in this run: {', '.join(keys)}")

    if RAW in selected:
        yield from _register(context, pipeline, keys, failed)
    if COPY in selected:
        yield from _copy(context, pipeline, transfer, [k for k in keys if k not in failed], failed)
    if RECON in selected:
        todo = [k for k in keys if k not in failed]
        yield from _reconstruct(context, pipeline, config, compute, todo, failed)
    if failed:
        raise dg.Failure(
            description=describe_failures(list(failed.values()), total=len(keys)),
            metadata={
                "failed_scans": sorted(failed),
                names.META_SCAN_FAILURES: dg.MetadataValue.json([asdict(f) for f in failed.values()]),
            },
            allow_retries=False,
        )


def _register(
    context: dg.AssetExecutionContext, pipeline: ScanPipeline, keys: list[str], failed: dict[str, ScanFailure]
) -> Iterator[Any]:
    """raw_scan: validate and checksum each scan; a bad one is quarantined and fails alone."""
    for key in keys:
        try:
            reg = pipeline.register(key)
        except StageError as exc:
            failed[key] = ScanFailure(key, names.RAW_SCAN, str(exc))
            context.log.error(f"scan {key} quarantined: {exc}")
            continue
        yield dg.AssetMaterialization(
            asset_key=RAW,
            partition=key,
            metadata={
                "relpath": reg.relpath,
                "bytes": reg.bytes,
                **({"sha256": reg.sha256} if reg.sha256 else {}),
                **reg.summary,
            },
        )


def _copy(
    context: dg.AssetExecutionContext,
    pipeline: ScanPipeline,
    transfer: TransferResource,
    todo: list[str],
    failed: dict[str, ScanFailure],
) -> Iterator[Any]:
    """nersc_copy: one transfer for the batch, holding a transfer pool slot only meanwhile."""
    checked = False
    with pool_slot(context, transfer.pool):
        report, errors = pipeline.copy(todo, label=f"cosmic {context.run_id[:8]}")
    for key, reason in errors.items():
        failed[key] = ScanFailure(key, names.NERSC_COPY, reason)
        context.log.error(f"copy of scan {key} failed: {reason}")
    for key, outcome in report.outcomes.items():
        if not outcome.ok:
            continue
        meta: dict[str, Any] = {
            "destination": outcome.destination,
            "bytes": outcome.bytes,
            "seconds": round(outcome.seconds, 3),
            "rate_MBps": round(outcome.bytes / outcome.seconds / 1e6, 2) if outcome.seconds > 0 else 0.0,
            "already_present": outcome.already_present,
            "checksum_verified": outcome.verified,
        }
        if report.task_id:
            meta["globus_task_id"] = report.task_id
        if report.task_url:
            meta["globus_task"] = dg.MetadataValue.url(report.task_url)
        yield dg.AssetMaterialization(asset_key=COPY, partition=key, metadata=meta)
        yield copy_check(pipeline, key, outcome)
        checked = True
    if checked:
        yield _checks_reported(context, COPY, names.COPY_CHECK)


def _reconstruct(
    context: dg.AssetExecutionContext,
    pipeline: ScanPipeline,
    config: ReconstructionConfig,
    compute: ComputeResource,
    todo: list[str],
    failed: dict[str, ScanFailure],
) -> Iterator[Any]:
    """reconstruction: one job per scan, waited on together; terminating the run cancels them."""
    checked = False
    plan = ReconPlan(params=config.params(), slurm=compute.directives(), force=config.force)

    jobs: dict[str, str] = {}

    def submitted(key: str, job_id: str, reattached: bool) -> None:
        jobs[key] = job_id
        verb = "reattached to" if reattached else "submitted"
        context.log.info(f"scan {key}: {verb} job {job_id}")

    try:
        with pool_slot(context, compute.pool):
            results = pipeline.reconstruct(todo, plan, on_submitted=submitted)
    except dg.DagsterExecutionInterruptedError as exc:
        # The run was terminated by an operator: its jobs must not run on unattended, and
        # the step must not be retried (a retry would submit them again).
        for key, job_id in jobs.items():
            context.log.warning(f"run terminated: cancelling job {job_id} of scan {key}")
            pipeline.compute.cancel(job_id)
        raise dg.Failure(
            "run terminated by an operator; its jobs were cancelled", allow_retries=False
        ) from exc
    for key, result in results.items():
        if isinstance(result, StageError):
            failed[key] = ScanFailure(key, names.RECONSTRUCTION, str(result))
            context.log.error(f"reconstruction of scan {key} failed: {result}")
            continue
        yield dg.AssetMaterialization(
            asset_key=RECON, partition=key, metadata=_recon_metadata(result, compute)
        )
        yield reconstruction_check(key, result, max_object_error=config.max_object_error)
        checked = True
    if checked:
        yield _checks_reported(context, RECON, names.QUALITY_CHECK)


def _checks_reported(context: dg.AssetExecutionContext, asset: dg.AssetKey, check: str) -> dg.Output:
    """Tell Dagster the check's output is done: its per-scan evaluations were yielded above.

    Dagster counts only unpartitioned ``AssetCheckResult``s as a check's output; without this
    a successful run logs "did not yield or return expected outputs {...}" for every batch.
    """
    name = context.assets_def.get_output_name_for_asset_check_key(dg.AssetCheckKey(asset, check))
    return dg.Output(None, output_name=name)


def _recon_metadata(result: Reconstruction, compute: ComputeResource) -> dict[str, Any]:
    summary, job = result.summary, result.job
    meta: dict[str, Any] = {
        "engine": result.engine,
        "parameters": dg.MetadataValue.json(result.params),
        "job_id": job.job_id,
        "state": job.state,
        "reattached": job.reattached,
        "output": result.output,
        "fourier_error_final": summary.get("fourier_error_final"),
        "fourier_error_drop": summary.get("fourier_error_drop"),
        "verdict": summary.get("verdict_reason", ""),
    }
    figures = summary.get("quality") or {}
    if figures.get("error_to_noise_floor") is not None:
        meta["error_to_noise_floor"] = round(figures["error_to_noise_floor"], 3)
        meta["noise_floor"] = figures.get("noise_floor")
    if figures.get("beam_px") is not None:  # the beam's width on the sample, from the probe
        meta["beam_px"] = round(figures["beam_px"], 1)
    binning = (summary.get("parameters") or {}).get("detector_binning")
    if binning is not None:  # > 1: a low-count scan reconstructed from a binned detector
        meta["detector_binning"] = binning
    focus = summary.get("probe_focus") or {}
    if focus.get("probe_defocus_um") is not None:
        meta["probe_defocus_um"] = round(focus["probe_defocus_um"], 2)
        meta["probe_defocus_chosen_by"] = focus.get("chosen_by", "")
        meta["probe_defocus_reason"] = focus.get("reason", "")
        if focus.get("seconds") is not None:
            meta["auto_focus_s"] = round(focus["seconds"], 2)
        if focus.get("contrast") is not None:  # near 1: the data barely fixed the defocus (a doubt)
            meta["probe_defocus_contrast"] = round(focus["contrast"], 3)
        if focus.get("runs"):  # the verdict failed the first run: repeated from a smaller defocus
            meta["reconstruction_runs"] = len(focus["runs"])
    if summary.get("object_error") is not None:
        meta["object_error"] = summary["object_error"]
    if summary.get("device"):  # engines over ptycho/xp: where it ran, and its GPU memory peak
        meta["device"] = summary["device"]
        meta["peak_gpu_memory_mib"] = round((summary.get("peak_gpu_memory_bytes") or 0) / 2**20, 1)
    if job.queue_wait_s is not None:
        meta["queue_wait_s"] = round(job.queue_wait_s, 2)
    if job.run_s is not None:
        meta["run_s"] = round(job.run_s, 2)
    url = compute.job_url(job.job_id)
    if url:
        meta["job"] = dg.MetadataValue.url(url)
    if result.preview:
        meta["preview_path"] = dg.MetadataValue.path(result.preview)
        data = base64.b64encode(Path(result.preview).read_bytes()).decode()
        meta["preview"] = dg.MetadataValue.md(f"![preview](data:image/png;base64,{data})")
    return meta
