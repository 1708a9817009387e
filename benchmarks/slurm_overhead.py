"""What SlurmCompute costs on top of the job itself, on the local one-node Slurm.

* ``job_states`` for N jobs: one squeue call for all (what a poll does) against one call per job;
* ``find_job`` (the lookup before every submission);
* submit -> COMPLETED seen by ``run_batch`` for a job that only runs ``true`` (scheduling latency +
  polling), one job at a time, and for a batch of jobs waited on together.

Needs a running local Slurm (``scripts/local-slurm.sh install && scripts/local-slurm.sh start``).
Usage: python benchmarks/slurm_overhead.py [--jobs 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cosmic_dagster.compute.protocol import JobSpec
from cosmic_dagster.compute.slurm import cli as slurm_cli
from cosmic_dagster.compute.slurm.compute import SlurmCompute
from cosmic_dagster.domain.ledger import Ledger


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    try:
        slurm_cli.sinfo()
    except slurm_cli.SlurmCommandError as exc:
        sys.exit(f"no local Slurm: {exc}")
    tag = f"bench{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        compute = SlurmCompute(Ledger(base / "ledger.db"), poll_interval_s=0.5, max_poll_interval_s=1.0)

        def spec(name: str) -> JobSpec:
            return JobSpec(name=name, script="#!/bin/bash\ntrue\n", workdir=str(base / name))

        single = []
        for i in range(args.repeats):
            start = time.perf_counter()
            outcome = compute.run_batch([spec(f"{tag}.one{i}")])[f"{tag}.one{i}"]
            single.append(time.perf_counter() - start)
            assert outcome.ok, outcome
        start = time.perf_counter()
        batch = compute.run_batch([spec(f"{tag}.batch{i}") for i in range(args.jobs)])
        batch_s = time.perf_counter() - start
        assert all(o.ok for o in batch.values()), batch

        ids = [o.job_id for o in batch.values()]
        together = timed(lambda: slurm_cli.job_states(ids), args.repeats)
        one_by_one = timed(lambda: [slurm_cli.job_states([i]) for i in ids], args.repeats)
        find = timed(lambda: slurm_cli.find_job(f"{tag}.batch0"), args.repeats)
        find_missing = timed(lambda: slurm_cli.find_job(f"{tag}.missing"), args.repeats)

    print(f"submit -> COMPLETED, 1 job       median {statistics.median(single):6.2f} s over {args.repeats}")
    print(f"submit -> COMPLETED, {args.jobs} jobs      {batch_s:6.2f} s (one run_batch)")
    print(f"job_states({len(ids)} ids) one call     median {together * 1e3:6.1f} ms")
    print(
        f"job_states, one call per id     median {one_by_one * 1e3:6.1f} ms  ({one_by_one / together:.1f}x)"
    )
    print(f"find_job (squeue hit)           median {find * 1e3:6.1f} ms")
    print(f"find_job (miss -> sacct -c)     median {find_missing * 1e3:6.1f} ms")
    print(
        f"RESULT single_job_s={statistics.median(single):.2f} batch_{args.jobs}_jobs_s={batch_s:.2f} "
        f"states_batched_ms={together * 1e3:.1f} states_per_id_ms={one_by_one * 1e3:.1f} "
        f"find_hit_ms={find * 1e3:.1f} find_miss_ms={find_missing * 1e3:.1f}"
    )


if __name__ == "__main__":
    main()
