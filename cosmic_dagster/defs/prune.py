"""The prune job and its schedule (stopped by default): thin over :mod:`cosmic_dagster.pipeline.prune`.

Every decision is recorded per scan on the ``beamline_pruned`` asset: an observation in a dry run
(what would happen), a materialization when the job deletes. A delete that failed fails the run,
so the failure alert fires (the older system reported a failed Globus delete as success).
"""

import time
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from cosmic_dagster import names
from cosmic_dagster.config import Settings
from cosmic_dagster.defs.assets import COPY, RECON
from cosmic_dagster.defs.partitions import scans
from cosmic_dagster.defs.resources import StateResource, TransferResource
from cosmic_dagster.pipeline.prune import DELETE_FAILED, DELETED, PrunePolicy, Pruner, ScanFacts

PRUNED = dg.AssetKey(names.BEAMLINE_PRUNED)
PRUNED_SPEC = dg.AssetSpec(
    PRUNED,
    partitions_def=scans,
    group_name="cosmic",
    description="Whether the scan's beamline file was deleted by the prune job, and why (audit trail).",
)


class PruneConfig(dg.Config):
    delete: bool = Field(
        default=False, description="delete the safe files; false (default) is a dry run that only lists them"
    )
    retention_days: float | None = Field(
        default=None, description="keep scans younger than this many days (default: COSMIC_RETENTION_DAYS)"
    )
    require_reconstruction: bool = Field(
        default=True, description="keep scans whose reconstruction is not materialized"
    )


def scan_facts(instance: dg.DagsterInstance, keys: Sequence[str]) -> dict[str, ScanFacts]:
    """Copy materialized, copy check passed *after* the latest copy, reconstruction materialized."""
    copied = instance.get_materialized_partitions(COPY)
    reconstructed = instance.get_materialized_partitions(RECON)
    check_key = dg.AssetCheckKey(COPY, names.COPY_CHECK)
    checks: dict[str, bool | None] = {}
    for start in range(0, len(keys), 1000):
        for info in instance.event_log_storage.get_asset_check_partition_info(
            [check_key], partition_keys=list(keys[start : start + 1000])
        ):
            after_copy = (info.latest_materialization_storage_id or 0) < info.latest_check_event_storage_id
            status = info.latest_execution_status
            if status.value == "SUCCEEDED" and after_copy:
                checks[str(info.partition_key)] = True
            elif status.value == "FAILED":
                checks[str(info.partition_key)] = False
    return {
        key: ScanFacts(copied=key in copied, copy_check=checks.get(key), reconstructed=key in reconstructed)
        for key in keys
    }


def build_prune_job(settings: Settings) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    @dg.op(name=names.PRUNE_OP, description="Decide per scan, delete the safe beamline files if asked.")
    def prune_op(
        context: dg.OpExecutionContext, config: PruneConfig, state: StateResource, transfer: TransferResource
    ) -> Iterator[Any]:
        ledger = state.ledger()
        policy = PrunePolicy(
            retention_days=settings.retention_days
            if config.retention_days is None
            else config.retention_days,
            require_reconstruction=config.require_reconstruction,
        )
        pruner = Pruner(ledger, transfer.adapter(ledger), policy)
        keys = sorted(pruner.registered())
        report = pruner.run(
            scan_facts(context.instance, keys), now=time.time(), delete=config.delete, label=context.run_id
        )
        event = dg.AssetObservation if report.dry_run else dg.AssetMaterialization
        known = set(context.instance.get_dynamic_partitions(scans.name))
        for d in report.decisions:
            if d.key not in known:
                continue
            yield event(
                asset_key=PRUNED,
                partition=d.key,
                metadata={
                    "action": d.action,
                    "reason": d.reason,
                    "dry_run": report.dry_run,
                    "relpath": d.relpath,
                    "bytes": d.bytes,
                    "conditions": dg.MetadataValue.json(d.conditions),
                },
            )
        context.log.info(report.table())
        failed = [d for d in report.decisions if d.action == DELETE_FAILED]
        if failed:
            lines = "\n".join(f"- {d.key}: {d.reason}" for d in failed)
            raise dg.Failure(f"{len(failed)} beamline file(s) could not be deleted:\n{lines}")
        deleted = sum(1 for d in report.decisions if d.action == DELETED)
        context.log.info(
            f"{deleted} beamline file(s) deleted" if not report.dry_run else "dry run: nothing deleted"
        )
        yield dg.Output(None, metadata={k.replace(" ", "_"): v for k, v in report.totals().items()})

    @dg.job(
        name=names.PRUNE_JOB, description="Delete verified, old beamline copies (dry run unless delete=true)."
    )
    def prune_job() -> None:
        prune_op()

    schedule = dg.ScheduleDefinition(
        name=names.PRUNE_SCHEDULE,
        job=prune_job,
        cron_schedule=settings.prune_cron,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        run_config={"ops": {names.PRUNE_OP: {"config": {"delete": settings.prune_delete}}}},
        description="Prune beamline copies (deletes only with COSMIC_PRUNE_DELETE=true).",
    )
    return prune_job, schedule
