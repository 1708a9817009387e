"""The emulator against the wire contract, driven by the unmodified sfapi-client (and raw HTTP)."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sfapi_client import Client, SfApiError
from sfapi_client.compute import Machine
from sfapi_client.jobs import JobState

from cosmic_dagster.emulators.sfapi.auth import JWT_BEARER
from cosmic_dagster.emulators.sfapi.sbatch import ScriptError, directives
from cosmic_dagster.emulators.sfapi.scheduler import SimulatedScheduler, parse_time_limit
from cosmic_dagster.emulators.sfapi.server import Faults, SfapiEmulator

CLIENT_ID = "abcdefghijklm"  # registered by the fixtures in conftest.py
EMULATOR_CLI = [sys.executable, "-m", "cosmic_dagster.emulators.sfapi.server", "--client-id", CLIENT_ID]
SCRIPT = "#!/bin/bash\n#SBATCH --job-name=wire\n#SBATCH --output={out}\necho hello from $SLURM_JOB_ID\n"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assertion(key: rsa.RSAPrivateKey, audience: str, alg: str = "RS256", **claims: object) -> str:
    now = int(time.time())
    body = {
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": audience,
        "iat": now,
        "exp": now + 300,
        "jti": str(now),
    }
    body.update(claims)
    signing_input = (
        f"{_b64(json.dumps({'typ': 'JWT', 'alg': alg}).encode())}.{_b64(json.dumps(body).encode())}"
    )
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def token_request(emulator: SfapiEmulator, client_assertion: str) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": client_assertion,
    }
    return httpx.post(emulator.token_url, data=form)


@pytest.fixture
def client(emulator: SfapiEmulator, private_pem: str) -> Client:
    with Client(
        client_id=CLIENT_ID,
        secret=private_pem,
        api_base_url=emulator.api_base_url,
        token_url=emulator.token_url,
        wait_interval=1,
    ) as c:
        yield c


def test_valid_assertion_gets_a_bearer_token(emulator: SfapiEmulator, rsa_key: rsa.RSAPrivateKey) -> None:
    answer = token_request(emulator, assertion(rsa_key, emulator.token_url))

    assert answer.status_code == 200
    token = answer.json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == 600
    account = httpx.get(
        f"{emulator.api_base_url}/account/", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert account.json()["name"] and account.json()["uid"] >= 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"iss": "someoneelse12"}, "iss/sub"),
        ({"sub": "someoneelse12"}, "iss/sub"),
        ({"aud": "https://oidc.nersc.gov/c2id/token"}, "aud must be"),
        ({"exp": 1000}, "expired"),
        ({"iat": time.time() + 3600}, "in the future"),
        ({"jti": ""}, "no jti"),
    ],
)
def test_assertion_claims_are_checked(
    emulator: SfapiEmulator, rsa_key: rsa.RSAPrivateKey, change: dict, reason: str
) -> None:
    answer = token_request(emulator, assertion(rsa_key, emulator.token_url, **change))

    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client" and reason in answer.json()["error_description"]


def test_forged_or_replayed_assertions_are_refused(
    emulator: SfapiEmulator, rsa_key: rsa.RSAPrivateKey
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good = assertion(rsa_key, emulator.token_url, jti="once")
    header, claims, signature = good.split(".")
    unsigned = f"{_b64(json.dumps({'alg': 'none'}).encode())}.{claims}."

    assert token_request(emulator, assertion(stranger, emulator.token_url)).status_code == 401
    assert token_request(emulator, f"{header}.{claims}.{signature[:-4]}AAAA").status_code == 401
    assert "algorithm" in token_request(emulator, unsigned).json()["error_description"]
    assert token_request(emulator, good).status_code == 200
    assert "already used" in token_request(emulator, good).json()["error_description"]


def test_api_needs_a_token_but_status_does_not(emulator: SfapiEmulator) -> None:
    assert httpx.get(f"{emulator.api_base_url}/account/").status_code == 401
    assert (
        httpx.get(f"{emulator.api_base_url}/account/", headers={"Authorization": "Bearer x"}).status_code
        == 401
    )
    assert httpx.get(f"{emulator.api_base_url}/status/perlmutter").json()["status"] == "active"
    assert httpx.get(f"{emulator.api_base_url}/status/cori").status_code == 422
    assert httpx.get(f"{emulator.api_base_url}/nothing").status_code == 404


def test_submit_poll_and_sacct_fallback_with_the_real_client(
    emulator: SfapiEmulator, client: Client, nersc: Path
) -> None:
    out = nersc / "wire.out"
    perlmutter = client.compute(Machine.perlmutter)

    job = perlmutter.submit_job(SCRIPT.format(out=out))
    state = job.complete()
    routes = [r["route"] for r in emulator.requests()]
    sacct = perlmutter.job(job.jobid)

    assert state == JobState.COMPLETED
    assert out.read_text() == f"hello from {job.jobid}\n"
    assert (sacct.jobname, sacct.exitcode, sacct.state) == ("wire", "0:0", JobState.COMPLETED)
    assert routes[:4] == ["token", "status", "submit", "task"]
    assert routes.count("task") == 2  # "new" once, then "completed" with the job id
    assert routes[-2:] == ["squeue", "sacct"]  # finished jobs leave squeue
    submit_task = next(r for r in emulator.requests() if r["route"] == "submit")
    assert submit_task["status"] == 200


def test_task_result_is_a_json_string(
    emulator: SfapiEmulator, rsa_key: rsa.RSAPrivateKey, nersc: Path
) -> None:
    token = token_request(emulator, assertion(rsa_key, emulator.token_url)).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    base = emulator.api_base_url

    task = httpx.post(
        f"{base}/compute/jobs/perlmutter",
        data={"job": SCRIPT.format(out=nersc / "x"), "isPath": "false"},
        headers=headers,
    ).json()
    first = httpx.get(f"{base}/tasks/{task['task_id']}", headers=headers).json()
    second = httpx.get(f"{base}/tasks/{task['task_id']}", headers=headers).json()

    assert task["status"] == "OK" and first == {"id": task["task_id"], "status": "new", "result": None}
    assert second["status"] == "completed" and json.loads(second["result"]) == {
        "status": "ok",
        "jobid": "1001",
    }


def test_job_not_found_right_after_submission_is_reproduced(
    start_emulator: Callable[..., SfapiEmulator], private_pem: str, nersc: Path
) -> None:
    emulator = start_emulator(faults=Faults(invisible_s=30))
    with Client(
        CLIENT_ID, private_pem, api_base_url=emulator.api_base_url, token_url=emulator.token_url
    ) as c:
        job = c.compute(Machine.perlmutter).submit_job(SCRIPT.format(out=nersc / "x"))
        with pytest.raises(SfApiError) as caught:
            job.update()

    assert caught.value.message == f"Job not found: {job.jobid}"


def test_submission_errors_arrive_through_the_task(
    emulator: SfapiEmulator, client: Client, nersc: Path
) -> None:
    perlmutter = client.compute(Machine.perlmutter)

    with pytest.raises(SfApiError) as missing:
        perlmutter.submit_job(f"{nersc}/missing.sh")
    emulator.set_faults(machine_status="unavailable")
    with pytest.raises(SfApiError) as unavailable:
        perlmutter.submit_job(SCRIPT.format(out=nersc / "x"))

    assert "No such file or directory" in missing.value.message
    assert unavailable.value.message == "perlmutter is unavailable"
    assert client.compute(Machine.perlmutter).status.value == "unavailable"


def test_script_by_path_with_args(emulator: SfapiEmulator, client: Client, nersc: Path) -> None:
    script = nersc / "job.sh"
    script.write_text(f'#!/bin/bash\n#SBATCH --output={nersc}/args.out\necho "$@"\n')

    job = client.compute(Machine.perlmutter).submit_job(str(script), args=["a", "b c"])
    assert job.complete() == JobState.COMPLETED

    assert (nersc / "args.out").read_text() == "a b c\n"
    assert "ls" in emulator.request_counts()


def test_cancel_through_delete(emulator: SfapiEmulator, client: Client, nersc: Path) -> None:
    perlmutter = client.compute(Machine.perlmutter)
    job = perlmutter.submit_job(f"#!/bin/bash\n#SBATCH --output={nersc}/c.out\nsleep 30\n")

    job.cancel()

    assert job.complete() == JobState.CANCELLED
    assert perlmutter.job(job.jobid).state == JobState.CANCELLED  # sacct says "CANCELLED by <uid>"


def test_files_ls_download_upload_inside_the_roots_only(client: Client, nersc: Path) -> None:
    (nersc / "scan").mkdir()
    (nersc / "scan" / "a.txt").write_text("text\n")
    (nersc / "scan" / "b.bin").write_bytes(bytes(range(256)))
    perlmutter = client.compute(Machine.perlmutter)

    listing = perlmutter.ls(str(nersc / "scan"))
    [text_file] = perlmutter.ls(str(nersc / "scan" / "a.txt"))
    [binary_file] = perlmutter.ls(str(nersc / "scan" / "b.bin"))
    uploaded = perlmutter.ls(str(nersc / "scan"), directory=True)[0].upload(
        _named(io.BytesIO(b"new\x00data"), "up.dat")
    )

    assert sorted(p.name for p in listing) == ["a.txt", "b.bin"]
    assert text_file.is_file() and text_file.size == 5
    assert text_file.download().read() == "text\n"
    assert binary_file.download(binary=True).read() == bytes(range(256))
    assert (
        str(uploaded) == f"{nersc}/scan/up.dat" and (nersc / "scan" / "up.dat").read_bytes() == b"new\x00data"
    )
    with pytest.raises(SfApiError, match="No such file or directory"):
        perlmutter.ls(str(nersc / "missing"))
    with pytest.raises(SfApiError, match="outside the allowed roots"):
        perlmutter.ls("/etc")
    with pytest.raises(SfApiError, match="outside the allowed roots"):
        perlmutter.ls(str(nersc / ".." / ".."))


def _named(buffer: io.BytesIO, name: str) -> io.BytesIO:
    buffer.filename = name  # type: ignore[attr-defined]
    return buffer


def test_command_runs_and_reports_errors(client: Client, nersc: Path) -> None:
    perlmutter = client.compute(Machine.perlmutter)

    assert perlmutter.run(f"mkdir -p {nersc}/made && ls {nersc}") == "made\n"
    with pytest.raises(SfApiError, match="No such file"):
        perlmutter.run("ls /definitely/not/here")


def test_control_endpoint_sets_faults_and_lists_jobs(
    emulator: SfapiEmulator, client: Client, nersc: Path
) -> None:
    control = f"{emulator.url}/_emulator"

    changed = httpx.post(
        f"{control}/faults", json={"machine_status": "degraded", "http_errors": [{"status": 503}]}
    )
    bad_field = httpx.post(f"{control}/faults", json={"machine_state": "down"})
    bad_value = httpx.post(f"{control}/faults", json={"job_faults": [{"state": "EXPLODED"}]})
    first, second = (httpx.get(f"{emulator.api_base_url}/status/perlmutter") for _ in "12")
    client.compute(Machine.perlmutter).submit_job(SCRIPT.format(out=nersc / "x"))
    jobs = httpx.get(f"{control}/jobs").json()["jobs"]
    counts = httpx.get(f"{control}/requests").json()

    assert changed.json()["machine_status"] == "degraded" and emulator.faults.machine_status == "degraded"
    assert first.status_code == 503 and second.json()["status"] == "degraded"  # the burst was one request
    assert (
        bad_field.status_code == 400 and "unknown fault field(s) machine_state" in bad_field.json()["detail"]
    )
    assert bad_value.status_code == 400 and "expected one of FAILED" in bad_value.json()["detail"]
    assert [(j["jobid"], j["name"]) for j in jobs] == [("1001", "wire")]
    assert counts["counts"]["submit"] == 1 and counts["tokens_issued"] == 1


def test_request_log_has_no_secrets(
    start_emulator: Callable[..., SfapiEmulator], private_pem: str, nersc: Path, tmp_path: Path
) -> None:
    log = tmp_path / "requests.jsonl"
    emulator = start_emulator(request_log=log)
    with Client(
        CLIENT_ID, private_pem, api_base_url=emulator.api_base_url, token_url=emulator.token_url
    ) as c:
        c.compute(Machine.perlmutter).submit_job(SCRIPT.format(out=nersc / "x"))
        token = c.token

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [entry["route"] for entry in lines][:3] == ["token", "status", "submit"]
    assert token not in log.read_text() and "eyJ" not in log.read_text()


def test_cli_prints_where_it_listens(public_pem: bytes, tmp_path: Path, nersc: Path) -> None:
    key = tmp_path / "client.pub"
    key.write_bytes(public_pem)
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"machine_status": "unavailable"}))
    process = subprocess.Popen(
        [
            *EMULATOR_CLI,
            "--port",
            "0",
            "--public-key",
            str(key),
            "--allowed-root",
            str(nersc),
            "--faults",
            str(faults),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        assert httpx.get(f"{url}/api/v1.2/status/perlmutter").json()["status"] == "unavailable"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_cli_rejects_a_bad_faults_file(public_pem: bytes, tmp_path: Path) -> None:
    key = tmp_path / "client.pub"
    key.write_bytes(public_pem)
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"http_errors": [{"status": 200}]}))

    done = subprocess.run(
        [*EMULATOR_CLI, "--public-key", str(key), "--faults", str(faults)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2 and "HTTP fault status must be 4xx or 5xx" in done.stderr


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5", 300), ("1:30", 90), ("01:00:00", 3600), ("2-0", 172800), ("1-02:03", 93780), ("0-0:0:7", 7)],
)
def test_time_limits_parse_like_slurm(value: str, seconds: int) -> None:
    assert parse_time_limit(value) == seconds


def test_output_directory_must_exist_like_slurm(
    start_emulator: Callable[..., SfapiEmulator], private_pem: str, nersc: Path
) -> None:
    emulator = start_emulator(scheduler=SimulatedScheduler(queue_wait_s=0))
    with Client(
        CLIENT_ID, private_pem, api_base_url=emulator.api_base_url, token_url=emulator.token_url
    ) as c:
        job = c.compute(Machine.perlmutter).submit_job(SCRIPT.format(out=nersc / "missing-dir" / "job.out"))

        assert job.complete() == JobState.FAILED

    assert emulator.jobs()[0]["exit_code"] == "0:53"


def test_public_key_must_be_rsa_pem(nersc: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    ec_pem = ec_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    with pytest.raises(ValueError, match="not a PEM-encoded public key"):
        SfapiEmulator(client_id=CLIENT_ID, public_key_pem=b"garbage")
    with pytest.raises(ValueError, match="must be an RSA key"):
        SfapiEmulator(client_id=CLIENT_ID, public_key_pem=ec_pem)


# --- the emulator's own reading of batch scripts (independent of the adapter's) -----------------
def test_directives_are_read_as_sbatch_documents_them() -> None:
    script = "\n".join(
        [
            "#!/bin/bash",
            "#SBATCH -J recon.a.1 --qos=regular -N2",
            "#SBATCH --output /w/job.out  # trailing comment",
            '#SBATCH -t 00:10:00 --exclusive -C gpu --chdir="/w d"',
            "  #SBATCH --account=indented_is_a_comment",
            "## SBATCH --account=commented_out",
            "",
            "echo hi",
            "#SBATCH --account=ignored_after_first_command",
        ]
    )

    assert directives(script) == {
        "job-name": "recon.a.1",
        "qos": "regular",
        "nodes": "2",
        "output": "/w/job.out",
        "time": "00:10:00",
        "exclusive": "",
        "constraint": "gpu",
        "chdir": "/w d",
    }


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("#!/bin/sh\n#SBATCH --time\n", "option '--time' requires an argument"),
        ("#!/bin/sh\n#SBATCH -J 'unclosed\n", "cannot parse directive"),
        ("#!/bin/sh\n#SBATCH stray\n", "unexpected argument 'stray'"),
    ],
)
def test_scripts_sbatch_would_refuse_are_refused_through_the_task(
    emulator: SfapiEmulator, client: Client, script: str, message: str
) -> None:
    with pytest.raises(SfApiError) as refused:
        client.compute(Machine.perlmutter).submit_job(script)

    assert message in refused.value.message
    assert emulator.jobs() == []
    with pytest.raises(ScriptError, match="does not look like a batch script"):
        directives("echo hi\n")


def test_faults_target_the_tasks_of_one_kind_and_refuse_tokens(
    emulator: SfapiEmulator, rsa_key: rsa.RSAPrivateKey, nersc: Path
) -> None:
    token = token_request(emulator, assertion(rsa_key, emulator.token_url)).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    base = emulator.api_base_url
    emulator.set_faults(http_errors=[{"status": 401, "route": "submit-task"}])

    command = httpx.post(f"{base}/utilities/command/perlmutter", data={"executable": "true"}, headers=headers)
    submit = httpx.post(
        f"{base}/compute/jobs/perlmutter",
        data={"job": SCRIPT.format(out=nersc / "x"), "isPath": "false"},
        headers=headers,
    )
    command_poll = httpx.get(f"{base}/tasks/{command.json()['task_id']}", headers=headers)
    submit_polls = [httpx.get(f"{base}/tasks/{submit.json()['task_id']}", headers=headers) for _ in "12"]
    emulator.set_faults(refuse_tokens=True)
    refused = httpx.get(f"{base}/account/", headers=headers)

    assert command_poll.status_code == 200
    assert [p.status_code for p in submit_polls] == [401, 200]  # the job exists all the same
    assert len(emulator.jobs()) == 1
    assert refused.status_code == 401
    assert token_request(emulator, assertion(rsa_key, emulator.token_url, jti="2")).status_code == 200
    with pytest.raises(ValueError, match="submit-task, command-task"):
        emulator.set_faults(http_errors=[{"status": 401, "route": "job-task"}])


def test_text_download_fault_answers_text_for_utf8_files_only(
    client: Client, emulator: SfapiEmulator, nersc: Path
) -> None:
    (nersc / "a.json").write_text('{"x": 1}')
    (nersc / "b.png").write_bytes(b"\x89PNG\x00\xff")
    emulator.set_faults(text_downloads=True)
    perlmutter = client.compute(Machine.perlmutter)

    text = perlmutter.ls(f"{nersc}/a.json")[0].download(binary=True)
    binary = perlmutter.ls(f"{nersc}/b.png")[0].download(binary=True)

    assert isinstance(text, io.StringIO) and text.getvalue() == '{"x": 1}'
    assert isinstance(binary, io.BytesIO) and binary.getvalue() == b"\x89PNG\x00\xff"
