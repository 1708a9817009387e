"""SfapiCompute over the real sfapi-client against the emulator: outcomes, faults, no duplicate jobs."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cosmic_dagster.compute.protocol import ComputeUnavailable, JobSpec
from cosmic_dagster.compute.sfapi.compute import SfapiCompute, SfapiError
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.emulators.sfapi.scheduler import JobFault, SimulatedScheduler
from cosmic_dagster.emulators.sfapi.server import Faults, HttpFault, SfapiEmulator
from tests.sfapi.conftest import CLIENT_ID

MakeCompute = Callable[..., SfapiCompute]
MakeSpec = Callable[..., JobSpec]


def names(emulator: SfapiEmulator) -> list[str]:
    return [job["name"] for job in emulator.jobs()]


def test_job_completes_and_results_download(
    emulator: SfapiEmulator, make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    compute = make_compute(emulator)
    spec = make_spec(seconds=0.5)
    seen: list[tuple[str, bool]] = []

    outcome = compute.run_batch([spec], lambda s, job_id, again: seen.append((job_id, again)))[spec.name]

    assert outcome.ok and outcome.state == "COMPLETED"
    assert seen == [(outcome.job_id, False)]
    assert outcome.run_s is not None and outcome.queue_wait_s is not None
    assert json.loads(compute.fetch(f"{spec.workdir}/summary.json")) == {"iterations": 3, "error": 0.01}
    assert compute.fetch(f"{spec.workdir}/preview.png") == b"\x89PNG\r\n\x1a\n\x00\xff"
    assert "starting recon.scan1.0123abcd threads=1" in compute.log_tail(outcome.job_id, spec)
    assert compute.job_url(outcome.job_id) == f"https://iris.nersc.gov/jobs/{outcome.job_id}"
    assert names(emulator) == [spec.name]
    # The script went inline and finished jobs were found through the sacct fallback.
    counts = emulator.request_counts()
    assert counts["submit"] == 1 and counts["sacct"] >= 1


@pytest.mark.parametrize(
    ("state", "evidence"),
    [
        ("FAILED", "Exited with exit code 1"),
        ("TIMEOUT", "DUE TO TIME LIMIT"),
        ("OUT_OF_MEMORY", "oom_kill event"),
        ("CANCELLED", "CANCELLED AT"),
        ("PREEMPTED", "DUE TO PREEMPTION"),
        ("NODE_FAIL", "DUE TO NODE FAILURE"),
    ],
)
def test_each_terminal_failure_state_carries_the_log_tail(
    start_emulator: Callable[..., SfapiEmulator],
    make_compute: MakeCompute,
    make_spec: MakeSpec,
    state: str,
    evidence: str,
) -> None:
    emulator = start_emulator(faults=Faults(job_faults=(JobFault(state, after_s=0.3),)))
    spec = make_spec(seconds=5)

    outcome = make_compute(emulator).run_batch([spec])[spec.name]

    assert outcome.state == state and not outcome.ok
    assert "starting recon.scan1.0123abcd" in outcome.log_tail
    assert evidence in outcome.log_tail
    assert names(emulator) == [spec.name]


def test_script_failure_and_time_limit_are_real(
    emulator: SfapiEmulator, make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    failing = make_spec("recon.bad.00000001", body="echo 'engine: diverged' >&2; exit 3")
    slow = make_spec("recon.slow.00000002", seconds=30, header="#SBATCH --time=0:01")

    outcomes = make_compute(emulator).run_batch([failing, slow])

    assert outcomes[failing.name].state == "FAILED"
    assert outcomes[failing.name].log_tail.endswith("engine: diverged")
    assert outcomes[slow.name].state == "TIMEOUT"
    assert "DUE TO TIME LIMIT" in outcomes[slow.name].log_tail
    assert {job["jobid"]: job["exit_code"] for job in emulator.jobs()}[outcomes[failing.name].job_id] == "3:0"


def test_job_invisible_right_after_submission_is_waited_for(
    start_emulator: Callable[..., SfapiEmulator], make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    emulator = start_emulator(faults=Faults(invisible_s=1.5))
    spec = make_spec()

    outcome = make_compute(emulator).run_batch([spec])[spec.name]

    assert outcome.state == "COMPLETED"
    polls = [r for r in emulator.requests() if r["route"] == "sacct" and r["kwargs"][0].startswith("jobid=")]
    assert polls[0]["rows"] == 0  # "Job not found" happened, and was survived
    assert names(emulator) == [spec.name]


def test_job_never_visible_is_reported_lost_not_hung(
    start_emulator: Callable[..., SfapiEmulator], make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    emulator = start_emulator(faults=Faults(invisible_s=60))
    spec = make_spec()

    outcome = make_compute(emulator, not_found_grace_s=1.0).run_batch([spec])[spec.name]

    assert outcome.state == "LOST"


def test_bursts_of_5xx_and_429_are_survived_without_duplicates(
    start_emulator: Callable[..., SfapiEmulator], make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    bursts = (
        HttpFault(429, count=2, route="submit"),
        HttpFault(503, count=3, route="squeue"),
        HttpFault(500, count=2, route="sacct"),
        HttpFault(502, count=2, route="task"),
        HttpFault(504, count=1, route="download"),
    )
    emulator = start_emulator(faults=Faults(http_errors=bursts))
    spec = make_spec()
    compute = make_compute(emulator)

    outcome = compute.run_batch([spec])[spec.name]

    assert outcome.state == "COMPLETED"
    assert compute.fetch(f"{spec.workdir}/preview.png").startswith(b"\x89PNG")
    assert names(emulator) == [spec.name]
    assert emulator.faults.http_errors == ()  # every injected error was served
    statuses = [r["status"] for r in emulator.requests()]
    assert statuses.count(503) == 3 and statuses.count(500) == 2 and statuses.count(429) == 2


def test_submit_accepted_but_answer_lost_makes_no_twin(
    start_emulator: Callable[..., SfapiEmulator],
    make_compute: MakeCompute,
    make_spec: MakeSpec,
    tmp_path: Path,
) -> None:
    # NERSC takes the job, the gateway answers 502: sfapi-client would POST again (a twin).
    emulator = start_emulator(
        faults=Faults(http_errors=(HttpFault(502, count=1, route="submit", after=True),)),
        scheduler=SimulatedScheduler(queue_wait_s=2.0, spool_dir=tmp_path / "spool"),
    )
    spec = make_spec()

    outcome = make_compute(emulator).run_batch([spec])[spec.name]

    assert outcome.state == "COMPLETED"
    assert [job["state"] for job in emulator.jobs()] == ["COMPLETED"]  # found by name, one job
    assert [r["status"] for r in emulator.requests() if r["route"] == "submit"] == [502]


def test_submit_refused_before_it_took_effect_is_sent_again_after_the_grace(
    start_emulator: Callable[..., SfapiEmulator], make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    emulator = start_emulator(faults=Faults(http_errors=(HttpFault(502, count=1, route="submit"),)))
    spec = make_spec()

    outcome = make_compute(emulator, not_found_grace_s=1.0).run_batch([spec])[spec.name]

    assert outcome.state == "COMPLETED"
    assert names(emulator) == [spec.name]
    assert [r["status"] for r in emulator.requests() if r["route"] == "submit"] == [502, 200]


def test_401_on_the_post_itself_is_renewed_and_sent_again(
    start_emulator: Callable[..., SfapiEmulator], make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    # A refused POST took no effect: renewing the token and posting again is safe.
    emulator = start_emulator(faults=Faults(http_errors=(HttpFault(401, count=1, route="submit"),)))
    spec = make_spec()

    outcome = make_compute(emulator).run_batch([spec])[spec.name]

    assert outcome.state == "COMPLETED" and names(emulator) == [spec.name]
    assert [r["status"] for r in emulator.requests() if r["route"] == "submit"] == [401, 200]
    assert emulator.tokens_issued == 2


@pytest.mark.parametrize("status", [401, 500])
def test_submit_task_that_fails_after_the_post_never_makes_a_twin(
    start_emulator: Callable[..., SfapiEmulator], make_compute: MakeCompute, make_spec: MakeSpec, status: int
) -> None:
    # 401: the token expired between the POST NERSC accepted and the first poll of its task
    # (renew, read the same task); 500 for longer than the patience: find the job by name.
    fault = HttpFault(status, count=1 if status == 401 else 100, route="submit-task")
    emulator = start_emulator(faults=Faults(http_errors=(fault,)))
    spec = make_spec()

    outcome = make_compute(emulator, api_patience_s=0.5).run_batch([spec])[spec.name]

    assert outcome.state == "COMPLETED"
    assert names(emulator) == [spec.name]
    assert emulator.request_counts()["submit"] == 1
    assert status in [r["status"] for r in emulator.requests() if r["route"] == "task"]


def test_api_down_longer_than_patience_is_a_clear_error(
    start_emulator: Callable[..., SfapiEmulator], make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    emulator = start_emulator()
    spec = make_spec()

    def break_sacct(*_: object) -> None:
        emulator.set_faults(http_errors=[HttpFault(500, count=1000, route="sacct")])

    with pytest.raises(SfapiError, match=r"polling jobs \(sacct\): NERSC SFAPI failing \(HTTP 500\)"):
        make_compute(emulator, api_patience_s=1.0).run_batch([spec], break_sacct)


def test_token_expiry_mid_wait_is_survived(
    start_emulator: Callable[..., SfapiEmulator], make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    # authlib renews 60 s before expiry: a 61 s token is renewed about every second.
    emulator = start_emulator(token_ttl_s=61)
    spec = make_spec(seconds=3)

    outcome = make_compute(emulator).run_batch([spec])[spec.name]

    assert outcome.state == "COMPLETED"
    assert emulator.tokens_issued >= 3
    assert all(r["status"] != 401 for r in emulator.requests())


def test_token_revoked_mid_wait_gets_a_fresh_token(
    emulator: SfapiEmulator, make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    spec = make_spec(seconds=1)

    outcome = make_compute(emulator).run_batch([spec], lambda *_: emulator.revoke_tokens())[spec.name]

    assert outcome.state == "COMPLETED"
    assert [r["status"] for r in emulator.requests()].count(401) == 1
    assert emulator.tokens_issued == 2
    assert names(emulator) == [spec.name]


@pytest.mark.parametrize("status", ["unavailable", "other"])
def test_machine_unavailable_submits_nothing(
    start_emulator: Callable[..., SfapiEmulator], make_compute: MakeCompute, make_spec: MakeSpec, status: str
) -> None:
    emulator = start_emulator(faults=Faults(machine_status=status))

    with pytest.raises(ComputeUnavailable, match=f"perlmutter is {status}"):
        make_compute(emulator).run_batch([make_spec()])

    assert emulator.jobs() == []
    assert "submit" not in emulator.request_counts()


def test_unreachable_api_is_compute_unavailable(make_compute: MakeCompute, make_spec: MakeSpec) -> None:
    class Gone:
        api_base_url = "http://127.0.0.1:9/api/v1.2"
        token_url = "http://127.0.0.1:9/token"

    with pytest.raises(ComputeUnavailable, match="cannot reach NERSC SFAPI"):
        make_compute(Gone()).run_batch([make_spec()])


def test_wrong_key_is_refused_clearly(
    start_emulator: Callable[..., SfapiEmulator], make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    registered = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    emulator = start_emulator(
        public_key_pem=registered.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    refused = rf"refused the credentials of SFAPI client {CLIENT_ID} .*invalid_client"
    with pytest.raises(ComputeUnavailable, match=refused):
        make_compute(emulator).run_batch([make_spec()])

    assert emulator.jobs() == []


@pytest.mark.parametrize("status_too", [False, True])
def test_tokens_refused_on_every_call_are_named_as_such(
    start_emulator: Callable[..., SfapiEmulator],
    make_compute: MakeCompute,
    make_spec: MakeSpec,
    status_too: bool,
) -> None:
    # Tokens are issued but every call is refused (client revoked in Iris, or IP not allowed);
    # with status_too even the machine status answers 401.
    status_401 = (HttpFault(401, count=100, route="status"),) if status_too else ()
    emulator = start_emulator(faults=Faults(refuse_tokens=True, http_errors=status_401))

    with pytest.raises(ComputeUnavailable) as caught:
        make_compute(emulator).run_batch([make_spec()])

    message = str(caught.value)
    assert f"refused the credentials of SFAPI client {CLIENT_ID}" in message
    assert "also with a fresh token" in message and "cannot reach" not in message
    assert emulator.jobs() == [] and emulator.tokens_issued == 2


def test_downloads_answered_as_text_are_accepted(
    start_emulator: Callable[..., SfapiEmulator], make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    emulator = start_emulator(faults=Faults(text_downloads=True))
    compute = make_compute(emulator)
    spec = make_spec(body="echo 'engine: diverged'; exit 3")

    outcome = compute.run_batch([spec])[spec.name]
    good = make_spec("recon.good.00000002")
    compute.run_batch([good])

    assert outcome.state == "FAILED" and outcome.log_tail.endswith("engine: diverged")
    assert json.loads(compute.fetch(f"{good.workdir}/summary.json")) == {"iterations": 3, "error": 0.01}
    assert compute.fetch(f"{good.workdir}/preview.png") == b"\x89PNG\r\n\x1a\n\x00\xff"  # not UTF-8


def test_submission_refused_by_slurm_is_a_clear_error(
    start_emulator: Callable[..., SfapiEmulator], make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    refusal = "sbatch: error: Batch job submission failed: Invalid qos specification"
    emulator = start_emulator(faults=Faults(submit_error=refusal))

    with pytest.raises(SfapiError, match="Invalid qos specification") as caught:
        make_compute(emulator).run_batch([make_spec()])

    assert "no job was created" in str(caught.value)
    assert emulator.jobs() == []


def test_states_of_a_batch_are_fetched_in_one_query_per_poll(
    emulator: SfapiEmulator, make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    specs = [make_spec(f"recon.scan{i}.0000000{i}", seconds=1) for i in range(3)]

    outcomes = make_compute(emulator).run_batch(specs)

    assert {o.state for o in outcomes.values()} == {"COMPLETED"}
    ids = sorted(o.job_id for o in outcomes.values())
    polls = [r for r in emulator.requests() if r["route"] == "squeue" and r["kwargs"][0].startswith("jobid=")]
    polled = [sorted(r["kwargs"][0].removeprefix("jobid=").split(",")) for r in polls]
    assert len(polled) >= 2 and polled[0] == ids  # all jobs of the batch in one query...
    assert all(set(later) <= set(earlier) for earlier, later in itertools.pairwise(polled))  # ...until done


def test_rerun_reattaches_by_ledger_and_by_name_never_duplicates(
    emulator: SfapiEmulator, make_compute: MakeCompute, make_spec: MakeSpec, tmp_path: Path
) -> None:
    spec = make_spec()
    first = make_compute(emulator).run_batch([spec])[spec.name]

    again = make_compute(emulator).run_batch([spec])[spec.name]  # same ledger
    lost_ledger = make_compute(emulator, Ledger(tmp_path / "other.sqlite")).run_batch([spec])[spec.name]

    assert again.reattached and again.job_id == first.job_id and again.state == "COMPLETED"
    assert lost_ledger.reattached and lost_ledger.job_id == first.job_id
    assert names(emulator) == [spec.name]


def test_failed_job_is_superseded_by_exactly_one_new_job(
    start_emulator: Callable[..., SfapiEmulator], make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    emulator = start_emulator(faults=Faults(job_faults=(JobFault("OUT_OF_MEMORY"),)))
    spec = make_spec()

    failed = make_compute(emulator).run_batch([spec])[spec.name]
    retried = make_compute(emulator).run_batch([spec])[spec.name]
    third = make_compute(emulator).run_batch([spec])[spec.name]

    assert failed.state == "OUT_OF_MEMORY"
    assert retried.state == "COMPLETED" and not retried.reattached and retried.job_id != failed.job_id
    assert third.reattached and third.job_id == retried.job_id
    assert names(emulator) == [spec.name, spec.name]


def test_cancel_ends_the_job_cancelled(
    start_emulator: Callable[..., SfapiEmulator], make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    emulator = start_emulator(scheduler=SimulatedScheduler(queue_wait_s=0.0))
    compute = make_compute(emulator)
    spec = make_spec(seconds=30)

    outcome = compute.run_batch([spec], lambda s, job_id, again: compute.cancel(job_id))[spec.name]

    assert outcome.state == "CANCELLED"
    assert emulator.request_counts()["cancel"] == 1


def test_fetch_errors_are_specific(emulator: SfapiEmulator, make_compute: MakeCompute, nersc: Path) -> None:
    compute = make_compute(emulator)

    with pytest.raises(FileNotFoundError, match="does not exist on perlmutter"):
        compute.fetch(f"{nersc}/missing.json")
    with pytest.raises(IsADirectoryError):
        compute.fetch(str(nersc))
    with pytest.raises(SfapiError, match="Permission denied"):
        compute.fetch("/etc/passwd")
    with pytest.raises(ValueError, match="absolute path"):
        compute.fetch("summary.json")


def test_secrets_stay_out_of_logs_and_reprs(
    emulator: SfapiEmulator,
    make_compute: MakeCompute,
    make_spec: MakeSpec,
    private_pem: str,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "requests.jsonl"
    emulator._request_log = log_file
    compute = make_compute(emulator)
    with caplog.at_level(logging.DEBUG):
        compute.run_batch([make_spec()])
    token = compute._client().token
    key_line = private_pem.splitlines()[5]

    for text in (caplog.text, log_file.read_text(), repr(compute), repr(compute.credentials)):
        assert key_line not in text
        assert token not in text
    assert "Bearer" not in log_file.read_text()


def test_reattach_checks_of_a_batch_cost_the_same_as_for_one_job(
    emulator: SfapiEmulator, make_compute: MakeCompute, make_spec: MakeSpec
) -> None:
    specs = [make_spec(f"recon.scan{i}.0000000{i}") for i in range(4)]
    compute = make_compute(emulator)
    compute.run_batch(specs)
    listings = [r for r in emulator.requests() if r["kwargs"] and r["kwargs"][0].startswith("user=")]
    emulator.reset_requests()

    again = compute.run_batch(specs)  # same ledger: every job is reattached
    before_wait = emulator.requests()

    assert all(o.reattached for o in again.values()) and len(emulator.jobs()) == 4
    # New jobs: one squeue and one sacct listing of the user's jobs for the whole batch.
    assert sorted(r["route"] for r in listings) == ["sacct", "squeue"]
    # Reattaching: one squeue query (and one sacct for finished jobs) for all four.
    state_queries = [r for r in before_wait if r["route"] in ("squeue", "sacct")]
    assert len(state_queries) <= 2 * 2  # the reattach check, then the first poll of the wait
    assert all(len(r["kwargs"][0].split(",")) == 4 for r in state_queries if r["route"] == "squeue")
