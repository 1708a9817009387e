"""The Dagster resource closes the SfapiCompute sessions it handed out when the run ends."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from cosmic_dagster.compute.sfapi.compute import SfapiCompute
from cosmic_dagster.defs.resources import SfapiComputeResource
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.emulators.sfapi.server import SfapiEmulator


def test_resource_teardown_closes_the_sfapi_sessions(
    emulator: SfapiEmulator, key_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file, id_file = key_files
    monkeypatch.setenv("PATH_NERSC_PRI_KEY", str(key_file))
    monkeypatch.setenv("PATH_NERSC_ID", str(id_file))
    monkeypatch.setenv("SFAPI_API_BASE_URL", emulator.api_base_url)
    monkeypatch.setenv("SFAPI_TOKEN_URL", emulator.token_url)

    with dg.build_resources({"compute": SfapiComputeResource(recon_root=str(tmp_path))}) as resources:
        compute = resources.compute.adapter(Ledger(tmp_path / "ledger.sqlite"))
        assert isinstance(compute, SfapiCompute)
        compute.check_available()  # opens the session: a token and a live connection
        session = compute._client()._http_client()
        assert not session.is_closed

    assert session.is_closed
    assert compute._client_obj is None
