"""Endpoints file (old config.yml format) and client credentials from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cosmic_dagster.transfer.globus.endpoints import (
    Endpoint,
    EndpointConfigError,
    get_endpoint,
    load_endpoint,
    load_endpoints,
)
from cosmic_dagster.transfer.globus.transfer import GlobusCredentials, GlobusCredentialsError

UUID = "44ae904c-ab64-4145-a8f0-7287de38324d"
OLD_CONFIG = """
globus:
  globus_endpoints:
    data7012:
      root_path: /
      uri: data7012.lbl.gov
      uuid: 44AE904C-AB64-4145-A8F0-7287DE38324D
    nersc7012: {root_path: /global/cfs/cdirs/als/gsharing/data_mover/7012/, uri: nersc.gov,
                uuid: df82346e-9a15-11ea-b3c4-0ae144191ee3}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_loads_the_old_format(tmp_path: Path) -> None:
    endpoints = load_endpoints(write(tmp_path, OLD_CONFIG))
    assert endpoints["data7012"] == Endpoint(
        "data7012", "44ae904c-ab64-4145-a8f0-7287de38324d", "/", "data7012.lbl.gov"
    )
    nersc = endpoints["nersc7012"]
    assert nersc.root_path == "/global/cfs/cdirs/als/gsharing/data_mover/7012"
    assert (
        nersc.path("2024/03/240315/x.cxi")
        == "/global/cfs/cdirs/als/gsharing/data_mover/7012/2024/03/240315/x.cxi"
    )
    assert endpoints["data7012"].path("a/b.cxi") == "/a/b.cxi"
    with pytest.raises(ValueError, match="relative"):
        nersc.path("../escape.cxi")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("globus: [unclosed", "not valid YAML"),
        ("other: {}", "globus_endpoints"),
        ("globus:\n  globus_endpoints:\n    a: {root_path: /}\n", "has no uuid"),
        ("globus:\n  globus_endpoints:\n    a: {root_path: /, uuid: 1234}\n", "is not a UUID"),
        (
            f"globus:\n  globus_endpoints:\n    a: {{root_path: data, uuid: {UUID}}}\n",
            "absolute path",
        ),
        (
            "globus:\n  globus_endpoints:\n    a: {uuid: 44ae904c-ab64-4145-a8f0-7287de38324d}\n",
            "absolute path",
        ),
        (
            f"globus:\n  globus_endpoints:\n    a: {{root_path: /, uuid: {UUID}, x: 1}}\n",
            "unknown keys",
        ),
    ],
)
def test_bad_files_are_refused_clearly(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(EndpointConfigError, match=message):
        load_endpoints(write(tmp_path, text))


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(EndpointConfigError, match="not found"):
        load_endpoints(tmp_path / "nope.yml")
    path = write(tmp_path, OLD_CONFIG)
    with pytest.raises(EndpointConfigError, match=r"'nersc'.*data7012, nersc7012"):
        load_endpoint(path, "nersc")
    assert get_endpoint(load_endpoints(path), "nersc7012").uri == "nersc.gov"


def test_credentials_from_env() -> None:
    creds = GlobusCredentials.from_env({"GLOBUS_CLIENT_ID": " cid ", "GLOBUS_CLIENT_SECRET": "s3cret\n"})
    assert (creds.client_id, creds.client_secret) == ("cid", "s3cret")
    assert "s3cret" not in repr(creds) and "s3cret" not in str(creds)


def test_credentials_from_a_private_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("file-secret\n")
    os.chmod(secret, 0o600)
    env = {"GLOBUS_CLIENT_ID": "cid", "GLOBUS_CLIENT_SECRET_FILE": str(secret)}
    assert GlobusCredentials.from_env(env).client_secret == "file-secret"
    os.chmod(secret, 0o644)
    with pytest.raises(GlobusCredentialsError, match=r"readable by group or others.*chmod 600") as info:
        GlobusCredentials.from_env(env)
    assert "file-secret" not in str(info.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "GLOBUS_CLIENT_ID is not set"),
        ({"GLOBUS_CLIENT_ID": "cid"}, "GLOBUS_CLIENT_SECRET"),
        (
            {"GLOBUS_CLIENT_ID": "cid", "GLOBUS_CLIENT_SECRET": "a", "GLOBUS_CLIENT_SECRET_FILE": "/x"},
            "only one",
        ),
        ({"GLOBUS_CLIENT_ID": "cid", "GLOBUS_CLIENT_SECRET_FILE": "/does/not/exist"}, "does not exist"),
    ],
)
def test_bad_credentials_are_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(GlobusCredentialsError, match=message):
        GlobusCredentials.from_env(env)
