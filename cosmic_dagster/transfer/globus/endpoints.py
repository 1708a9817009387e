"""Globus collections ("endpoints") from the endpoints file, in the format of the older system.

Parity with splash_flows_globus ``config.yml``::

    globus:
      globus_endpoints:
        data7012: {root_path: /, uri: data7012.lbl.gov, uuid: 44ae904c-ab64-4145-a8f0-7287de38324d}

A scan's relative path is the same on both sides: it lives at ``root_path/relpath`` on every
collection, so one relative path names the file at the beamline and at NERSC.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cosmic_dagster.domain.scans import normalize_relpath
from cosmic_dagster.errors import CosmicError


class EndpointConfigError(CosmicError, ValueError):
    """The endpoints file is missing, malformed, or does not name the endpoint asked for."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    uuid: str
    root_path: str
    uri: str | None = None

    def path(self, relpath: str) -> str:
        """The collection path of ``relpath`` ("" is the root); refuses absolute paths and ``..``."""
        if relpath == "":
            return self.root_path
        return posixpath.join(self.root_path, normalize_relpath(relpath))


def load_endpoints(path: str | Path) -> dict[str, Endpoint]:
    """Every endpoint of the file, validated (UUID, absolute root_path), by name."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise EndpointConfigError(f"endpoints file not found: {path}") from None
    except OSError as exc:
        raise EndpointConfigError(f"cannot read endpoints file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EndpointConfigError(f"endpoints file {path} is not valid YAML: {exc}") from None
    section = (data or {}).get("globus", {}) if isinstance(data, dict) else None
    raw = section.get("globus_endpoints") if isinstance(section, dict) else None
    if not isinstance(raw, dict) or not raw:
        raise EndpointConfigError(f"{path}: expected a non-empty 'globus: globus_endpoints:' mapping")
    return {str(name): _endpoint(path, str(name), spec) for name, spec in raw.items()}


def _endpoint(path: Path, name: str, spec: Any) -> Endpoint:
    where = f"{path}: endpoint {name!r}"
    if not isinstance(spec, dict):
        raise EndpointConfigError(f"{where} must be a mapping with uuid and root_path")
    unknown = set(spec) - {"uuid", "root_path", "uri", "name"}
    if unknown:
        raise EndpointConfigError(f"{where} has unknown keys {sorted(unknown)}")
    if not spec.get("uuid"):
        raise EndpointConfigError(f"{where} has no uuid")
    try:
        canonical = str(uuid.UUID(str(spec["uuid"])))
    except ValueError:
        raise EndpointConfigError(f"{where}: uuid {spec['uuid']!r} is not a UUID") from None
    root = spec.get("root_path")
    if not isinstance(root, str) or not root.startswith("/"):
        raise EndpointConfigError(f"{where}: root_path must be an absolute path, got {root!r}")
    if ".." in root.split("/"):
        raise EndpointConfigError(f"{where}: root_path must not contain '..', got {root!r}")
    uri = spec.get("uri")
    return Endpoint(
        name=name, uuid=canonical, root_path=posixpath.normpath(root), uri=str(uri) if uri else None
    )


def get_endpoint(endpoints: Mapping[str, Endpoint], name: str) -> Endpoint:
    """The endpoint called ``name``, or an error listing the known names."""
    try:
        return endpoints[name]
    except KeyError:
        known = ", ".join(sorted(endpoints)) or "none"
        raise EndpointConfigError(
            f"unknown Globus endpoint {name!r}; the endpoints file defines: {known}"
        ) from None


def load_endpoint(path: str | Path, name: str) -> Endpoint:
    """One endpoint of the file by name."""
    return get_endpoint(load_endpoints(path), name)
