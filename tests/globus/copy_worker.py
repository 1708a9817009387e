"""A run worker doing one copy_batch, to be SIGKILLed by a test while it waits on its task.

Usage: python copy_worker.py ENDPOINTS_FILE LEDGER URL ITEMS_JSON (credentials from GLOBUS_CLIENT_*).
"""

from __future__ import annotations

import json
import sys

from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.transfer.globus.transfer import GlobusCredentials, GlobusTransfer
from cosmic_dagster.transfer.protocol import TransferItem

if __name__ == "__main__":
    endpoints_file, ledger_path, url, items_json = sys.argv[1:5]
    adapter = GlobusTransfer.from_config(
        endpoints_file,
        "data7012",
        "nersc7012",
        GlobusCredentials.from_env(),
        Ledger(ledger_path),
        poll_interval_s=0.05,
        transfer_base_url=url,
        auth_base_url=url,
    )
    report = adapter.copy_batch([TransferItem(**i) for i in json.loads(items_json)], "worker")
    print(json.dumps({k: o.ok for k, o in report.outcomes.items()}))
