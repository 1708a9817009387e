"""Instance-wide concurrency pools, held for one phase of the batch step only.

Dagster's ``pool=`` holds a slot for a whole step; our step copies and then waits hours for
reconstructions, so a ``globus`` slot held that long would stall every new copy. Instead the step
holds ``globus`` only while its transfer task is active and ``slurm-perlmutter`` (one pool per
machine) only while its jobs are submitted and waited on. The slots are Dagster's own (limits set
with ``cosmic-dagster deploy pools`` or ``dagster instance concurrency set``, shown in the UI
under Deployment → Concurrency, freed by run monitoring when a run dies); a pool without a limit
is not waited for.

Dagster internal used (1.13.27): ``InstanceConcurrencyContext``, the class Dagster's executors
claim step slots with.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

POLL_S = 0.5


@contextmanager
def pool_slot(context: dg.AssetExecutionContext, pool: str) -> Iterator[None]:
    """Hold one slot of ``pool`` for the body; waits (logging once) while the pool is full."""
    slot = f"{context.op_execution_context.op.name}[{pool}]"
    with InstanceConcurrencyContext(context.instance, context.run) as slots:
        started = time.monotonic()
        waited = False
        while not slots.claim(pool, slot):
            if not waited:
                info = context.instance.event_log_storage.get_concurrency_info(pool)
                context.log.info(
                    f"waiting for a slot in pool {pool!r} ({info.active_slot_count} of "
                    f"{info.slot_count} in use)"
                )
                waited = True
            time.sleep(POLL_S)
        if waited:
            context.log.info(f"got a slot in pool {pool!r} after {time.monotonic() - started:.1f} s")
        try:
            yield
        finally:
            slots.free_step(slot)
