"""A run worker in its own process: ``python sfapi_worker.py LEDGER SPEC_JSON``.

Builds SfapiCompute from the environment (PATH_NERSC_ID, PATH_NERSC_PRI_KEY, SFAPI_API_BASE_URL,
SFAPI_TOKEN_URL), runs one job and prints its outcome as one JSON line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from cosmic_dagster.compute.protocol import JobSpec
from cosmic_dagster.compute.sfapi.compute import SfapiCompute
from cosmic_dagster.domain.ledger import Ledger


def main(ledger_path: str, spec_json: str) -> None:
    spec = JobSpec(**json.loads(spec_json))
    compute = SfapiCompute.from_env(Ledger(ledger_path), poll_interval_s=0.2, max_poll_interval_s=0.5)
    outcome = compute.run_batch([spec])[spec.name]
    print(json.dumps(asdict(outcome)), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
