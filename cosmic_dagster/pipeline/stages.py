"""The three stages of a scan, as plain Python over the adapters (no Dagster here).

``register`` -> ``copy`` -> ``reconstruct``: each works on a batch of scan keys, reports per scan,
and keeps what later stages (or later runs) need in the :class:`~cosmic_dagster.domain.ledger.Ledger`, so
a stage can be rerun alone (e.g. only the reconstruction of one failed scan).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cosmic_dagster import names
from cosmic_dagster.compute.jobscript import SlurmDirectives, job_name, params_digest, render_script
from cosmic_dagster.compute.protocol import Compute, JobOutcome, JobSpec
from cosmic_dagster.domain.arrivals import Lister
from cosmic_dagster.domain.checksums import sha256_file
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.quarantine import Quarantine
from cosmic_dagster.domain.scans import ScanPathError, relpath_for_key, resolve_under_root
from cosmic_dagster.errors import CosmicError
from cosmic_dagster.files import write_atomic
from cosmic_dagster.ptycho import outputs
from cosmic_dagster.ptycho.cxi import CxiError, read_summary
from cosmic_dagster.transfer.protocol import BatchReport, Transfer, TransferItem

REGISTRATION = "registration"
COPY = "copy"
JOB_PREFIX = "recon"  # job names: recon.<scan key>.<digest>


class StageError(CosmicError, RuntimeError):
    """One scan could not pass a stage; the message says why in operator terms."""


@dataclass(frozen=True)
class Registration:
    key: str
    relpath: str
    bytes: int
    sha256: str
    mtime: float
    summary: dict[str, Any]
    registered_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Reconstruction:
    key: str
    engine: str
    params: dict[str, Any]
    job: JobOutcome
    workdir: str
    output: str
    summary: dict[str, Any]
    preview: str | None


@dataclass(frozen=True)
class ReconPlan:
    """What to run for one scan: engine parameters plus where the job runs and writes."""

    params: Any
    slurm: SlurmDirectives | None = None
    force: bool = False


class ScanPipeline:
    def __init__(
        self,
        *,
        beamline_root: str | Path,
        ledger: Ledger,
        transfer: Transfer,
        compute: Compute,
        recon_root: str,
        preview_dir: str | Path,
        python: str = "python3",
        setup: str = "",
        gpu_setup: str = "",
        remote_lister: Lister | None = None,
    ):
        self.beamline_root = Path(beamline_root)
        self.ledger = ledger
        self.transfer = transfer
        self.compute = compute
        self.recon_root = recon_root.rstrip("/")
        self.preview_dir = Path(preview_dir)
        self.python = python
        self.setup = setup
        self.gpu_setup = gpu_setup
        self.remote_lister = remote_lister

    # --- raw_scan ----------------------------------------------------------------------------
    def register(self, key: str) -> Registration:
        """Validate the scan file as COSMIC CXI and checksum it; quarantine it if it is bad."""
        if self.remote_lister is not None:
            return self._register_remote(key)
        try:
            relpath = relpath_for_key(key)
            path = resolve_under_root(self.beamline_root, relpath)
            if not path.is_file():
                raise StageError(f"scan file not found: {relpath}")
            stat = path.stat()
            summary = read_summary(path)
            sha256 = sha256_file(path)
        except (CxiError, ScanPathError, ValueError, OSError, StageError) as exc:
            reason = str(exc)
            self.quarantine(key, names.RAW_SCAN, reason)
            raise StageError(reason) from exc
        reg = Registration(key, relpath, stat.st_size, sha256, stat.st_mtime, summary.to_metadata())
        self.ledger.put(REGISTRATION, key, asdict(reg))
        Quarantine(self.ledger).clear(key)
        return reg

    def _register_remote(self, key: str) -> Registration:
        """Without access to the raw data (agent at NERSC): size and time from the listing;
        integrity is then Globus's checksum verification, content validation the job's."""
        assert self.remote_lister is not None
        try:
            relpath = relpath_for_key(key)
            folder, name = relpath.rsplit("/", 1) if "/" in relpath else ("", relpath)
            entry = next((e for e in self.remote_lister.list_dir(folder) or [] if e.name == name), None)
            if entry is None or entry.is_dir:
                raise StageError(f"scan file not found on the beamline collection: {relpath}")
            if entry.size == 0:
                raise StageError(f"{name}: empty file (0 bytes)")
        except (ValueError, StageError) as exc:
            self.quarantine(key, names.RAW_SCAN, str(exc))
            raise StageError(str(exc)) from exc
        summary = {"validated": "by the reconstruction job (no local access to the raw data)"}
        reg = Registration(key, relpath, entry.size, "", entry.mtime, summary)
        self.ledger.put(REGISTRATION, key, asdict(reg))
        Quarantine(self.ledger).clear(key)
        return reg

    def registration(self, key: str) -> Registration:
        data = self.ledger.get(REGISTRATION, key)
        if data is None:
            raise StageError(f"scan {key} is not registered: materialize raw_scan first")
        return Registration(**data)

    def quarantine(self, key: str, stage: str, reason: str) -> None:
        """Record why a scan cannot be processed; the file itself is never moved or deleted."""
        Quarantine(self.ledger).add(relpath_for_key(key), stage, reason)

    # --- nersc_copy --------------------------------------------------------------------------
    def copy(self, keys: Sequence[str], label: str) -> tuple[BatchReport, dict[str, str]]:
        """Copy registered scans as one batch; returns the report and per-key errors."""
        errors: dict[str, str] = {}
        items = []
        for key in keys:
            try:
                reg = self.registration(key)
            except StageError as exc:
                errors[key] = str(exc)
                continue
            items.append(TransferItem(key=key, relpath=reg.relpath, size=reg.bytes, sha256=reg.sha256))
        report = self.transfer.copy_batch(items, label) if items else BatchReport(outcomes={}, seconds=0.0)
        for key, outcome in report.outcomes.items():
            if outcome.ok:
                self.ledger.put(COPY, key, {**asdict(outcome), "task_id": report.task_id})
            else:
                errors[key] = outcome.error or "copy not verified"
                self.quarantine(key, names.NERSC_COPY, errors[key])
        return report, errors

    def copy_record(self, key: str) -> dict[str, Any]:
        data = self.ledger.get(COPY, key)
        if data is None:
            raise StageError(f"scan {key} has no verified copy: materialize nersc_copy first")
        return data

    # --- reconstruction ----------------------------------------------------------------------
    def job_spec(self, key: str, plan: ReconPlan) -> JobSpec:
        workdir = f"{self.recon_root}/{key}/{params_digest(plan.params)}"
        name = job_name(JOB_PREFIX, key, plan.params, workdir=workdir)
        if plan.force:
            name = f"{name}.{int(time.time())}"
        script = render_script(
            plan.params,
            input_path=self.copy_record(key)["destination"],
            workdir=workdir,
            job_name=name,
            slurm=plan.slurm,
            python=self.python,
            setup=self.setup,
            gpu_setup=self.gpu_setup,
        )
        # Jobs with the same engine parameters on input of about the same size (within a factor
        # of two) run about as long: the adapter learns how long, and polls around that time.
        size = self.registration(key).bytes.bit_length()
        runtime_class = f"{plan.params.engine}.{params_digest(plan.params)}.{size}"
        return JobSpec(
            name=name,
            script=script,
            workdir=workdir,
            env={"OMP_NUM_THREADS": "1"},
            runtime_class=runtime_class,
        )

    def reconstruct(
        self,
        keys: Sequence[str],
        plan: ReconPlan,
        on_submitted: Callable[[str, str, bool], None] | None = None,
    ) -> dict[str, Reconstruction | StageError]:
        """Run (or reattach to) one job per scan, all waited on together."""
        results: dict[str, Reconstruction | StageError] = {}
        specs: dict[str, JobSpec] = {}
        for key in keys:
            try:
                specs[key] = self.job_spec(key, plan)
            except (StageError, ValueError) as exc:
                results[key] = StageError(str(exc))
        by_name = {spec.name: key for key, spec in specs.items()}

        def submitted(spec: JobSpec, job_id: str, reattached: bool) -> None:
            if on_submitted is not None:
                on_submitted(by_name[spec.name], job_id, reattached)

        outcomes = self.compute.run_batch(list(specs.values()), submitted) if specs else {}
        for key, spec in specs.items():
            results[key] = self._collect(key, spec, plan, outcomes[spec.name])
        return results

    def _collect(
        self, key: str, spec: JobSpec, plan: ReconPlan, job: JobOutcome
    ) -> Reconstruction | StageError:
        if not job.ok:
            tail = job.log_tail.strip()
            message = f"reconstruction job {job.job_id} ended {job.state}"
            return StageError(f"{message}\n--- last lines of job.out ---\n{tail}" if tail else message)
        try:
            summary = outputs.read_summary(
                self.compute.fetch(outputs.in_workdir(spec.workdir, outputs.SUMMARY))
            )
        except Exception as exc:
            return StageError(
                f"job {job.job_id} completed but its {outputs.SUMMARY} could not be read: {exc}"
            )
        preview = self._fetch_preview(key, spec)
        recon = Reconstruction(
            key=key,
            engine=plan.params.engine,
            params=asdict(plan.params),
            job=job,
            workdir=spec.workdir,
            output=summary.get("output") or outputs.in_workdir(spec.workdir, outputs.RECONSTRUCTION),
            summary=summary,
            preview=preview,
        )
        self.ledger.put(
            names.RECONSTRUCTION, key, {"workdir": spec.workdir, "job_id": job.job_id, "summary": summary}
        )
        return recon

    def _fetch_preview(self, key: str, spec: JobSpec) -> str | None:
        try:
            data = self.compute.fetch(outputs.in_workdir(spec.workdir, outputs.PREVIEW))
        except Exception:
            return None
        local = write_atomic(self.preview_dir / key / f"{Path(spec.workdir).name}.png", data)
        return str(local)
