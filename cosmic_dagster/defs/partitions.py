"""One dynamic partition per scan; keys come from :func:`cosmic_dagster.domain.scans.scan_key`."""

import dagster as dg

from cosmic_dagster import names

scans = dg.DynamicPartitionsDefinition(name=names.PARTITIONS)
