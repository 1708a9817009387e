"""A NERSC site on loopback, for trying the ``nersc`` profile offline, tests and benchmarks: the
Globus and SFAPI emulators, an RSA key pair and client files, an endpoints file, and the
environment that points the real globus-sdk and sfapi-client at them.

The credentials are made-up test values; the point is that the code under test handles them
exactly as it handles real ones (files, mode 600, never logged).
"""

from __future__ import annotations

import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cosmic_dagster.emulators.globus.server import EmulatorServer
from cosmic_dagster.emulators.sfapi.server import SfapiEmulator

BEAMLINE_ID = "44ae904c-ab64-4145-a8f0-7287de38324d"
NERSC_ID = "df82346e-9a15-11ea-b3c4-0ae144191ee3"
GLOBUS_ID = "0b7f7e56-4c39-4b0e-9d1e-3b1c8d0f2a77"
GLOBUS_SECRET = "globus-SECRET-do-not-log-9f3a"
SFAPI_ID = "abcdefghijklm"


class LoopbackSite:
    """Both emulators and the credentials files under ``base``; ``env`` configures the profile."""

    def __init__(self, base: Path, scheduler: object, *, task_latency_s: float = 0.0):
        self.base = base
        self.beamline = base / "data" / "beamline"
        self.nersc = base / "nersc"
        for path in (self.beamline, self.nersc):
            path.mkdir(parents=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        secrets = base / "secrets"
        secrets.mkdir(mode=0o700)
        (secrets / "clientid.txt").write_text(SFAPI_ID)
        key_file = secrets / "priv_key.pem"
        key_file.write_text(self.private_pem)
        key_file.chmod(0o600)
        self.globus = EmulatorServer(
            {BEAMLINE_ID: self.beamline, NERSC_ID: "/"},
            {GLOBUS_ID: GLOBUS_SECRET},
            task_latency_s=task_latency_s,
        ).start()
        self.sfapi = SfapiEmulator(
            client_id=SFAPI_ID, public_key_pem=public_pem, scheduler=scheduler, allowed_roots=[self.nersc]
        ).start()
        endpoints = base / "config.yml"
        endpoints.write_text(
            "globus:\n  globus_endpoints:\n"
            f"    data7012: {{root_path: /, uri: data7012.lbl.gov, uuid: {BEAMLINE_ID}}}\n"
            f"    nersc7012: {{root_path: {self.nersc}/cfs/7012, uri: nersc.gov, uuid: {NERSC_ID}}}\n"
        )
        globus_url = self.globus.url.rstrip("/") + "/"
        self.env = {
            "COSMIC_PROFILE": "nersc",
            "COSMIC_ENDPOINTS_FILE": str(endpoints),
            "COSMIC_NERSC_RECON_ROOT": str(self.nersc / "scratch" / "recon"),
            "COSMIC_JOB_PYTHON": sys.executable,
            "COSMIC_POLL_INTERVAL_S": "0.5",
            "GLOBUS_CLIENT_ID": GLOBUS_ID,
            "GLOBUS_CLIENT_SECRET": GLOBUS_SECRET,
            "GLOBUS_SDK_SERVICE_URL_TRANSFER": globus_url,
            "GLOBUS_SDK_SERVICE_URL_AUTH": globus_url,
            "PATH_NERSC_ID": str(secrets / "clientid.txt"),
            "PATH_NERSC_PRI_KEY": str(key_file),
            "SFAPI_API_BASE_URL": self.sfapi.api_base_url,
            "SFAPI_TOKEN_URL": self.sfapi.token_url,
        }

    def stop(self) -> None:
        self.sfapi.stop()
        self.globus.stop()
