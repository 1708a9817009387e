"""SFAPI requests per job-hour while SfapiCompute waits, and completion-to-outcome latency, for the
plain backoff schedule and for the schedule that polls densely around a job's expected end.

Real sfapi-client -> loopback SFAPI emulator (simulated scheduler). Time is scaled: one real
second stands for ``SCALE`` seconds, so a job that runs one hour runs ``3600 / SCALE`` s here and
the adapter's production poll settings (10 s first interval, x1.5 backoff to 60 s, 120 s
not-found grace) are divided by ``SCALE`` as well. Request counts need no scaling; latencies are
reported raw and multiplied back by ``SCALE`` (production-equivalent; this slightly inflates the
few milliseconds of HTTP overhead per poll).

Scenarios, run at the same time on separate emulators: ``--singles`` runs of one job each (their
durations spread over one max poll interval, so completion meets the polling cycle at evenly spread
points), and one run of ``--batch`` jobs waited on together (the base class asks for all of them in
one query). Each scenario runs twice: ``backoff`` (no run-time history: 10 s x1.5 up to 60 s) and
``expected end`` (the ledger holds earlier run times of the same kind, 1 h +-1 %, so the adapter
polls every 10 s only within 5 % of the run time around the expected end, and every 120 s before).
Requests before waiting starts (machine status, account, reattach checks, mkdir, submission) are
reported per job as "submit req/job".
Latency is measured at the adapter level, from the end of a run's last job (the emulator's record)
to ``run_batch`` returning (the median over all runs), not through Dagster.

Token renewals are not in the counts: tokens live 10 min at NERSC and are not scaled here (authlib
renews 60 s before expiry, unscaled); at NERSC they add 6 requests per hour per worker.

squeue/sacct times have one-second resolution, which is ``scale`` seconds production-equivalent:
a job's start is known only to within that, so the scale must stay well below the dense window
(about 110 s here) or the expected-end schedule is measured off target; hence the default of 60.

Usage: python benchmarks/sfapi_polling.py [--scale 60] [--singles 5] [--batch 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cosmic_dagster.compute.protocol import JobSpec
from cosmic_dagster.compute.sfapi.compute import SfapiCompute, SfapiCredentials
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.emulators.sfapi.scheduler import SimulatedScheduler
from cosmic_dagster.emulators.sfapi.server import SfapiEmulator

CLIENT_ID = "benchbenchben"
STATE_ROUTES = ("squeue", "sacct")


@dataclass
class Result:
    jobs: int
    job_hours: float  # production-equivalent hours spent waiting, summed over jobs
    wait_requests: int
    state_requests: int
    submit_requests: int
    latency_s: float  # raw seconds, end of the run's last job -> run_batch returned

    @property
    def per_job_hour(self) -> float:
        return self.wait_requests / self.job_hours


def run(
    n_jobs: int,
    scale: float,
    key: rsa.RSAPrivateKey,
    results: list[Result],
    extra_s: float = 0.0,
    history: bool = False,
) -> None:
    """One run_batch of ``n_jobs`` jobs that each run one (scaled) hour plus ``extra_s`` real seconds;
    ``history``: earlier jobs of the same kind ran about one hour."""
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with tempfile.TemporaryDirectory(prefix="sfapi-bench-") as tmp:
        root = Path(tmp)
        scheduler = SimulatedScheduler(
            queue_wait_s=60 / scale, min_run_s=3600 / scale + extra_s, spool_dir=root / "spool"
        )
        emulator = SfapiEmulator(
            client_id=CLIENT_ID,
            public_key_pem=public,
            scheduler=scheduler,
            allowed_roots=[root],
            task_pending_polls=0,  # the benchmark is about waiting, not sfapi-client's 1 s task sleeps
        ).start()
        try:
            compute = SfapiCompute(
                Ledger(root / "ledger.sqlite"),
                credentials=SfapiCredentials(CLIENT_ID, private),
                api_base_url=emulator.api_base_url,
                token_url=emulator.token_url,
                poll_interval_s=10 / scale,
                max_poll_interval_s=60 / scale,
                not_found_grace_s=120 / scale,
            )
            kind = "bench:1h" if history else ""
            for run_s in (3564, 3600, 3636) if history else ():
                compute.record_run_s(kind, run_s / scale)
            specs = [
                JobSpec(
                    f"bench.job{i}.{i:08d}", "#!/bin/bash\ntrue\n", str(root / f"job{i}"), runtime_class=kind
                )
                for i in range(n_jobs)
            ]
            submitted: dict[str, float] = {}
            compute.run_batch(specs, lambda spec, job_id, again: submitted.__setitem__(job_id, time.time()))
            returned = time.time()
            compute.close()
            ended = {job["jobid"]: job["ended"] for job in emulator.jobs()}
            requests = emulator.requests()
        finally:
            emulator.stop()
    waiting_since = max(submitted.values())
    waiting = [r for r in requests if r["t"] >= waiting_since]
    results.append(
        Result(
            jobs=n_jobs,
            job_hours=sum(returned - t for t in submitted.values()) * scale / 3600,
            wait_requests=len(waiting),
            state_requests=sum(r["route"] in STATE_ROUTES for r in waiting),
            submit_requests=len(requests) - len(waiting),
            latency_s=returned - max(ended[job_id] for job_id in submitted),
        )
    )


def scenario(args: argparse.Namespace, key: rsa.RSAPrivateKey, history: bool) -> list[threading.Thread]:
    singles: list[Result] = []
    batched: list[Result] = []
    # Single jobs last 1 h + i/n of the 60 s max poll interval: completion falls at evenly spread
    # points of the polling cycle instead of all at the same one.
    threads = [
        threading.Thread(
            target=run, args=(1, args.scale, key, singles, 60 / args.scale * i / args.singles, history)
        )
        for i in range(args.singles)
    ]
    threads.append(threading.Thread(target=run, args=(args.batch, args.scale, key, batched, 0.0, history)))
    args.results[history] = (singles, batched)
    return threads


def report(args: argparse.Namespace, label: str, singles: list[Result], batched: list[Result]) -> dict:
    if len(singles) != args.singles or len(batched) != 1:
        raise SystemExit("a scenario failed (see the traceback above)")
    rows = [(f"single #{i + 1}", r) for i, r in enumerate(singles)] + [(f"batch of {args.batch}", batched[0])]
    for name, r in rows:
        print(
            f"{label:<14}{name:<14}{r.jobs:>5}{r.job_hours:>8.2f}{r.wait_requests:>10}{r.state_requests:>9}"
            f"{r.submit_requests / r.jobs:>16.1f}{r.per_job_hour:>11.1f}"
        )
    latencies = [r.latency_s * args.scale for r in singles + batched]
    return {
        "rate": statistics.median(r.per_job_hour for r in singles),
        "batch_rate": batched[0].per_job_hour,
        "latency": statistics.median(latencies),
        "latency_max": max(latencies),
        "submit_single": statistics.median(r.submit_requests for r in singles),
        "submit_batch": batched[0].submit_requests / batched[0].jobs,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=60.0, help="simulated seconds per real second")
    parser.add_argument("--singles", type=int, default=5, help="runs of one job each")
    parser.add_argument("--batch", type=int, default=10, help="jobs in the batched run")
    args = parser.parse_args()
    args.results = {}
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    threads = scenario(args, key, history=False) + scenario(args, key, history=True)
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.time() - started

    print(f"time scale: 1 real s = {args.scale:g} s; a 1 h job runs {3600 / args.scale:.1f} s here")
    print("adapter settings (production): poll 10 s, x1.5 backoff to 60 s, one state query per poll")
    print(
        f"{'schedule':<14}{'scenario':<14}{'jobs':>5}{'job-h':>8}{'wait req':>10}{'state q':>9}"
        f"{'submit req/job':>16}{'req/job-h':>11}"
    )
    before = report(args, "backoff", *args.results[False])
    after = report(args, "expected end", *args.results[True])
    for label, r in (("backoff", before), ("expected end", after)):
        print(
            f"{label}: requests per job-hour 1 job {r['rate']:.1f}, {args.batch} jobs {r['batch_rate']:.1f}; "
            f"completion -> outcome median {r['latency']:.1f} s production-equivalent "
            f"(max {r['latency_max']:.0f} s); requests before waiting per job: 1 job "
            f"{r['submit_single']:.0f}, {args.batch} jobs {r['submit_batch']:.1f}"
        )
    print(f"wall time {wall:.0f} s")
    print(
        f"RESULT completion_to_materialized_s={after['latency']:.1f} "
        f"requests_per_job_hour={after['rate']:.1f} "
        f"completion_to_materialized_s_backoff={before['latency']:.1f} "
        f"requests_per_job_hour_backoff={before['rate']:.1f} "
        f"requests_per_job_hour_batch{args.batch}={after['batch_rate']:.1f} "
        f"submit_requests_per_job={after['submit_single']:.0f} "
        f"submit_requests_per_job_batch{args.batch}={after['submit_batch']:.1f} scale={args.scale:g}"
    )


if __name__ == "__main__":
    main()
