"""One dynamic partition per scan; keys come from :func:`cosmic_dagster.domain.scans.scan_key`."""

import dagster as dg

scans = dg.DynamicPartitionsDefinition(name="scans")
