"""Thin Dagster resources: configuration in, domain adapters out.

Each profile picks one implementation per role (state, transfer, compute, arrivals); assets and
sensors only see the role's base class.
"""

from __future__ import annotations

import sys
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from cosmic_dagster.compute.jobscript import SlurmDirectives
from cosmic_dagster.compute.local.compute import LocalCompute
from cosmic_dagster.compute.protocol import Compute
from cosmic_dagster.domain.arrivals import DirectoryLister, Lister
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.scans import ScanPathError, resolve_under_root
from cosmic_dagster.transfer.local import LocalTransfer
from cosmic_dagster.transfer.protocol import Transfer

# The Globus and SFAPI adapters are imported inside the methods that need them: every run worker
# loads this module, and the local profile should not pay for globus-sdk/httpx/authlib imports.


class StateResource(dg.ConfigurableResource):
    """Where the pipeline keeps external ids, registrations and fetched previews."""

    state_dir: str

    def ledger(self) -> Ledger:
        return Ledger(f"{self.state_dir}/ledger.sqlite")

    @property
    def preview_dir(self) -> str:
        return f"{self.state_dir}/previews"


class ArrivalsResource(dg.ConfigurableResource):
    """Where new scans are discovered and how cautiously (the beamline side)."""

    beamline_root: str
    recent_days: int = 2
    settle_seconds: float = 2.0
    # Extra wait before the sensor takes a complete scan: fresh scans are the watcher's
    # (cosmic-dagster watch); the sensor is the safety net. 0 when no watcher runs.
    watch_grace_seconds: float = 0.0
    max_scans_per_tick: int = 200
    max_scans_per_run: int = 20

    def lister(self) -> Lister:
        return DirectoryLister(self.beamline_root)

    def rejection(self, relpath: str) -> str | None:
        """Why a listed file must not enter the pipeline (e.g. a symlink leaving the root)."""
        try:
            resolve_under_root(self.beamline_root, relpath)
        except ScanPathError as exc:
            return str(exc)
        return None

    def remote(self) -> bool:
        """True when the raw files are only reachable through the lister (not on this disk)."""
        return False


class TransferResource(dg.ConfigurableResource):
    """Base of the copy resources; ``pool`` is the concurrency pool held while copying."""

    pool: str = "local-copy"

    def adapter(self, ledger: Ledger) -> Transfer:
        raise NotImplementedError


class LocalTransferResource(TransferResource):
    source_root: str
    destination_root: str

    def adapter(self, ledger: Ledger) -> Transfer:
        return LocalTransfer(self.source_root, self.destination_root)


class GlobusTransferResource(TransferResource):
    """Globus copies between two collections of the endpoints file (credentials from the env)."""

    endpoints_file: str
    source: str
    destination: str
    pool: str = "globus"  # Globus runs at most 3 active tasks per user
    poll_interval_s: float = 5.0
    deadline_s: float = 12 * 3600

    def adapter(self, ledger: Ledger) -> Transfer:
        from cosmic_dagster.transfer.globus.transfer import GlobusCredentials, GlobusTransfer

        return GlobusTransfer.from_config(
            self.endpoints_file,
            self.source,
            self.destination,
            GlobusCredentials.from_env(),
            ledger,
            poll_interval_s=self.poll_interval_s,
            deadline_s=self.deadline_s,
        )


class GlobusArrivalsResource(ArrivalsResource):
    """New scans found by listing the beamline collection (an agent without the raw data)."""

    endpoints_file: str
    source: str

    def lister(self) -> Lister:
        from cosmic_dagster.transfer.globus.listing import GlobusLister
        from cosmic_dagster.transfer.globus.transfer import GlobusCredentials

        return GlobusLister.from_config(self.endpoints_file, self.source, GlobusCredentials.from_env())

    def rejection(self, relpath: str) -> str | None:
        return None  # nothing to resolve here: Globus only serves what is inside the collection

    def remote(self) -> bool:
        return True


class ComputeResource(dg.ConfigurableResource):
    """Base of the compute resources; also says where jobs write, which python and which
    Slurm directives they use, and which concurrency pool (one per machine) submissions hold."""

    recon_root: str
    pool: str = "local-compute"
    python: str = sys.executable
    setup: str = ""
    gpu_setup: str = ""
    # The fields of SlurmDirectives (its one definition), validated there when a job is rendered.
    slurm: dict[str, Any] = {}

    def adapter(self, ledger: Ledger) -> Compute:
        raise NotImplementedError

    def job_url(self, job_id: str) -> str | None:
        return None

    def directives(self) -> SlurmDirectives | None:
        return None

    def _directives(self) -> SlurmDirectives:
        return SlurmDirectives(**self.slurm)


class SlurmComputeResource(ComputeResource):
    """Jobs on the site's own Slurm cluster with sbatch/squeue/sacct (no SFAPI)."""

    pool: str = "slurm-local"
    poll_interval_s: float = 2.0

    def adapter(self, ledger: Ledger) -> Compute:
        from cosmic_dagster.compute.slurm.compute import SlurmCompute

        return SlurmCompute(ledger, poll_interval_s=self.poll_interval_s)

    def directives(self) -> SlurmDirectives | None:
        return self._directives()


class SfapiComputeResource(ComputeResource):
    """Jobs on Perlmutter through the Superfacility API (credentials from the env)."""

    pool: str = "slurm-perlmutter"
    poll_interval_s: float = 10.0
    max_poll_interval_s: float = 60.0
    _adapters: list[Any] = PrivateAttr(default_factory=list)  # SfapiCompute, closed at teardown

    def adapter(self, ledger: Ledger) -> Compute:
        from cosmic_dagster.compute.sfapi.compute import SfapiCompute

        compute = SfapiCompute.from_env(
            ledger, poll_interval_s=self.poll_interval_s, max_poll_interval_s=self.max_poll_interval_s
        )
        self._adapters.append(compute)
        return compute

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the sfapi-client sessions (HTTP connections) this run opened."""
        while self._adapters:
            self._adapters.pop().close()

    def job_url(self, job_id: str) -> str | None:
        from cosmic_dagster.compute.sfapi.compute import JOB_URL_TEMPLATE

        return JOB_URL_TEMPLATE.format(job_id=job_id)

    def directives(self) -> SlurmDirectives | None:
        return self._directives()


class LocalComputeResource(ComputeResource):
    jobs_dir: str
    slots: int = 2

    def adapter(self, ledger: Ledger) -> Compute:
        return LocalCompute(self.jobs_dir, ledger, slots=self.slots)
