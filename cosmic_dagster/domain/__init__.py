"""Plain facts of the beamline: scan names and keys, arrivals, the ledger, checksums, alerts,
process identity. Imports neither dagster nor any SDK, nor another layer of the project."""
