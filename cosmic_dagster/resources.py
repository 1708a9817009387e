"""Thin Dagster resources: configuration in, domain adapters out.

Each profile picks one implementation per role (state, transfer, compute, arrivals); assets and
sensors only see the role's base class.
"""

from __future__ import annotations

import sys

import dagster as dg

from cosmic_dagster.arrivals import DirectoryLister, Lister
from cosmic_dagster.compute.local import LocalCompute
from cosmic_dagster.compute.protocol import Compute
from cosmic_dagster.ledger import Ledger
from cosmic_dagster.scans import ScanPathError, resolve_under_root
from cosmic_dagster.transfer.local import LocalTransfer
from cosmic_dagster.transfer.protocol import Transfer


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


class TransferResource(dg.ConfigurableResource):
    """Base of the copy resources."""

    def adapter(self, ledger: Ledger) -> Transfer:
        raise NotImplementedError


class LocalTransferResource(TransferResource):
    source_root: str
    destination_root: str

    def adapter(self, ledger: Ledger) -> Transfer:
        return LocalTransfer(self.source_root, self.destination_root)


class ComputeResource(dg.ConfigurableResource):
    """Base of the compute resources; also says where jobs write and which python they use."""

    recon_root: str
    python: str = sys.executable
    setup: str = ""

    def adapter(self, ledger: Ledger) -> Compute:
        raise NotImplementedError

    def job_url(self, job_id: str) -> str | None:
        return None


class LocalComputeResource(ComputeResource):
    jobs_dir: str
    slots: int = 2

    def adapter(self, ledger: Ledger) -> Compute:
        return LocalCompute(self.jobs_dir, ledger, slots=self.slots)
