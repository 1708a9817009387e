"""Listing the beamline collection through the Transfer API, for an agent without the raw data.

Implements :class:`cosmic_dagster.domain.arrivals.Lister` with ``operation_ls`` (paged), so the sensor's
:func:`~cosmic_dagster.domain.arrivals.discover` walks only the recent day folders of the archive.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import globus_sdk
from globus_sdk.transport import RetryConfig

from cosmic_dagster.domain.arrivals import Entry
from cosmic_dagster.transfer.globus.endpoints import Endpoint, load_endpoint
from cosmic_dagster.transfer.globus.transfer import GlobusCredentials, describe_error, make_transfer_client
from cosmic_dagster.transfer.protocol import TransferError

#: ``operation_ls`` error codes that mean "this folder is not there (as a folder)".
_NOT_A_FOLDER = ("ClientError.NotFound", "NotFound", "ExternalError.DirListingFailed.NotDirectory")


class GlobusLister:
    """Lists folders of ``endpoint``, given relative to its ``root_path``."""

    def __init__(
        self, transfer_client: globus_sdk.TransferClient, endpoint: Endpoint, *, page_size: int = 1000
    ):
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.client = transfer_client
        self.endpoint = endpoint
        self.page_size = page_size

    @classmethod
    def from_config(
        cls,
        endpoints_file: str | Path,
        endpoint_name: str,
        credentials: GlobusCredentials,
        *,
        transfer_base_url: str | None = None,
        auth_base_url: str | None = None,
        retry_config: RetryConfig | None = None,
    ) -> GlobusLister:
        client = make_transfer_client(
            credentials,
            transfer_base_url=transfer_base_url,
            auth_base_url=auth_base_url,
            retry_config=retry_config,
        )
        return cls(client, load_endpoint(endpoints_file, endpoint_name))

    def list_dir(self, relpath: str) -> list[Entry] | None:
        path = self.endpoint.path(relpath).rstrip("/") + "/"
        entries: list[Entry] = []
        offset = 0
        while True:
            try:
                page = self.client.operation_ls(
                    self.endpoint.uuid, path=path, limit=self.page_size, offset=offset
                )
            except globus_sdk.TransferAPIError as exc:
                if exc.http_status == 404 or exc.code in _NOT_A_FOLDER:
                    return None
                raise TransferError(
                    f"listing {path} on {self.endpoint.name}: {describe_error(exc)}"
                ) from None
            except (globus_sdk.GlobusAPIError, globus_sdk.NetworkError) as exc:
                raise TransferError(
                    f"listing {path} on {self.endpoint.name}: {describe_error(exc)}"
                ) from None
            data = page["DATA"]
            entries.extend(_entry(doc) for doc in data)
            if not page.get("has_next_page") or not data:
                return entries
            offset += len(data)


def _entry(doc: dict[str, Any]) -> Entry:
    kind = doc.get("type")
    modified = doc.get("last_modified")
    mtime = datetime.fromisoformat(modified).timestamp() if modified else 0.0
    return Entry(
        name=doc["name"],
        is_dir=kind == "dir",
        size=int(doc.get("size") or 0),
        mtime=mtime,
        is_symlink=kind == "link",
    )
