"""The output contract of a reconstruction job: the files it leaves in its working folder.

Engines write these (through :func:`write_summary`), the pipeline reads them back (through
:func:`read_summary`): the names and the summary's encoding live here and nowhere else. ptycho
imports nothing of the project outside itself, so readers in ``compute``/``pipeline`` import
from here.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from cosmic_dagster.files import write_atomic

#: The engine's full result (object, probe, error history, illumination), HDF5.
RECONSTRUCTION = "reconstruction.h5"
#: Strict JSON: figures, verdict, chosen parameters (what the pipeline records per scan).
SUMMARY = "summary.json"
#: A PNG of the reconstructed object's lit region, for the Dagster UI.
PREVIEW = "preview.png"


def in_workdir(workdir: str, name: str) -> str:
    """``workdir/name`` for a POSIX working folder that may be remote (no normalisation)."""
    return f"{workdir.rstrip('/') or ''}/{name}"


def write_summary(path: str | os.PathLike[str], document: dict[str, Any]) -> Path:
    """Strict JSON (non-finite numbers become null), written to a temporary name then renamed."""
    return write_atomic(path, json.dumps(_finite_or_null(document), indent=1, allow_nan=False) + "\n")


def read_summary(data: bytes | str) -> dict[str, Any]:
    """Parse a summary written by :func:`write_summary`; a non-object document is an error."""
    document = json.loads(data)
    if not isinstance(document, dict):
        raise ValueError(f"{SUMMARY} holds a {type(document).__name__}, not a JSON object")
    return document


def _finite_or_null(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value
