import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cosmic_dagster.compute.local.compute import LocalCompute
from cosmic_dagster.compute.protocol import JobSpec
from cosmic_dagster.domain.ledger import Ledger


def script(body: str) -> str:
    return "#!/bin/bash\nset -euo pipefail\n" + textwrap.dedent(body)


@pytest.fixture
def compute(tmp_path):
    return LocalCompute(tmp_path / "jobs", Ledger(tmp_path / "ledger.sqlite"), slots=2, poll_interval_s=0.1)


def spec(tmp_path, name, body):
    return JobSpec(name=name, script=script(body), workdir=str(tmp_path / "work" / name))


def test_jobs_run_detached_and_report_states(compute, tmp_path):
    ok = spec(tmp_path, "ok", "echo hello; echo '{\"a\": 1}' > summary.json\n")
    bad = spec(tmp_path, "bad", "echo step one; echo boom >&2; exit 3\n")
    outcomes = compute.run_batch([ok, bad])
    assert outcomes["ok"].state == "COMPLETED" and outcomes["ok"].ok
    assert json.loads(compute.fetch(f"{ok.workdir}/summary.json")) == {"a": 1}
    assert outcomes["bad"].state == "FAILED" and not outcomes["bad"].ok
    assert "boom" in outcomes["bad"].log_tail
    assert outcomes["ok"].run_s is not None and outcomes["ok"].queue_wait_s is not None


def test_completed_job_is_reattached_and_failed_one_superseded(compute, tmp_path):
    ok = spec(tmp_path, "ok", "echo run >> runs.txt\n")
    compute.run_batch([ok])
    again = compute.run_batch([ok])["ok"]
    assert again.reattached and (tmp_path / "work/ok/runs.txt").read_text() == "run\n"
    flaky = spec(tmp_path, "flaky", "[ -e ../flaky.marker ] || { touch ../flaky.marker; exit 1; }\n")
    first = compute.run_batch([flaky])["flaky"]
    second = compute.run_batch([flaky])["flaky"]
    assert first.state == "FAILED" and second.state == "COMPLETED" and not second.reattached
    assert second.job_id != first.job_id


def test_waiter_killed_mid_wait_reattaches_without_duplicate(tmp_path):
    code = textwrap.dedent(f"""
        from cosmic_dagster.compute.local.compute import LocalCompute
        from cosmic_dagster.compute.protocol import JobSpec
        from cosmic_dagster.domain.ledger import Ledger
        c = LocalCompute({str(tmp_path / "jobs")!r}, Ledger({str(tmp_path / "ledger.sqlite")!r}), slots=1,
                         poll_interval_s=0.1)
        c.run_batch([JobSpec(name="long", script="#!/bin/bash\\necho start >> runs.txt; sleep 3\\n",
                             workdir={str(tmp_path / "work")!r})])
    """)
    waiter = subprocess.Popen([sys.executable, "-c", code])
    ledger = Ledger(tmp_path / "ledger.sqlite")
    deadline = time.time() + 30
    while ledger.get("job", "long") is None and time.time() < deadline:
        time.sleep(0.05)
    waiter.send_signal(signal.SIGKILL)
    waiter.wait()
    compute = LocalCompute(tmp_path / "jobs", ledger, slots=1, poll_interval_s=0.1)
    outcome = compute.run_batch([JobSpec(name="long", script="unused", workdir=str(tmp_path / "work"))])[
        "long"
    ]
    assert outcome.reattached and outcome.state == "COMPLETED"
    assert (tmp_path / "work/runs.txt").read_text() == "start\n"
    assert len([d for d in os.listdir(tmp_path / "jobs") if d not in ("by-name", "slots")]) == 1


def test_cancel_ends_the_job_as_cancelled(compute, tmp_path):
    long = spec(tmp_path, "long", "sleep 60\n")
    job_id = compute.submit(long)
    deadline = time.time() + 20
    while compute.statuses([job_id])[job_id].state != "RUNNING" and time.time() < deadline:
        time.sleep(0.05)
    compute.cancel(job_id)
    while compute.statuses([job_id])[job_id].state == "RUNNING" and time.time() < deadline:
        time.sleep(0.05)
    assert compute.statuses([job_id])[job_id].state == "CANCELLED"
    quick = spec(tmp_path, "long", "echo again\n")  # same job name: the cancelled job is superseded
    outcome = compute.run_batch([quick])["long"]
    assert outcome.job_id != job_id and outcome.state == "COMPLETED"
