"""slurm_cli against the real local Slurm, and its retry/parse rules against scripted Slurm commands.

The scripted commands replay outputs recorded from Slurm 22.05 (the wire, not the code, is faked).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cosmic_dagster.compute.slurm import cli as slurm_cli
from cosmic_dagster.compute.slurm.cli import SlurmCommandError

UNREACHABLE = "Unable to contact slurm controller (connect failure)"


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """Install scripted Slurm commands first on PATH; returns (install, calls_log)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(slurm_cli, "RETRY_DELAYS_S", (0.01, 0.01, 0.01))
    monkeypatch.setattr(slurm_cli, "_completion_file_only", None)

    def install(name: str, body: str) -> None:
        path = bin_dir / name
        path.write_text(f'#!/bin/bash\necho "{name} $*" >> {calls}\n{body}\n')
        path.chmod(0o755)

    return install, calls


def _calls(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


def test_queries_are_retried_while_the_controller_is_unreachable(fake_slurm, tmp_path):
    install, calls = fake_slurm
    install(
        "squeue",
        f"""n=$(grep -c '^squeue' {calls})
if [ "$n" -le 2 ]; then echo 'slurm_load_jobs error: {UNREACHABLE}' >&2; exit 1; fi
echo '12|FAILED|768|1700000000|1700000010|/w/job.out|recon.k.1|'""",
    )
    jobs = slurm_cli.job_states(["12"])
    assert jobs == {
        "12": slurm_cli.SlurmJob("12", "recon.k.1", "FAILED", "3:0", 1700000000.0, 1700000010.0, "/w/job.out")
    }
    assert len(_calls(calls)) == 3


def test_forecast_times_of_unfinished_jobs_are_dropped(fake_slurm):
    """squeue prints the expected start of a pending job and start + time limit as a running job's end."""
    install, _ = fake_slurm
    install(
        "squeue",
        """echo '5|RUNNING|0|1700000000|1700000300|/w/a.out|a|'
echo '6|PENDING|0|1700000300|1700000600|/w/b.out|b|'""",
    )
    jobs = slurm_cli.job_states(["5", "6"])
    assert (jobs["5"].start, jobs["5"].end, jobs["5"].exit_code) == (1700000000.0, None, None)
    assert (jobs["6"].start, jobs["6"].end) == (None, None)


def test_gives_up_after_the_retries_with_command_and_stderr(fake_slurm):
    install, calls = fake_slurm
    install("squeue", "echo 'squeue: error: Socket timed out on send/recv operation' >&2; exit 1")
    with pytest.raises(SlurmCommandError, match="Socket timed out") as info:
        slurm_cli.job_states(["1", "2"])
    assert info.value.command[:4] == ["squeue", "-h", "-t", "all"]
    assert "squeue -h -t all -j 1,2" in str(info.value)
    assert len(_calls(calls)) == 4  # first try + 3 retries


def test_sbatch_is_not_repeated_when_it_may_have_gone_through(fake_slurm):
    install, calls = fake_slurm
    install("sbatch", "echo 'sbatch: error: Socket timed out on send/recv operation' >&2; exit 1")
    with pytest.raises(SlurmCommandError, match="Socket timed out"):
        slurm_cli.sbatch("#!/bin/bash\ntrue\n")
    assert len(_calls(calls)) == 1


def test_sbatch_is_repeated_when_the_controller_was_not_reached(fake_slurm, tmp_path, monkeypatch):
    """...and the job gets ``env`` and the caller's environment, minus anything that looks secret."""
    install, calls = fake_slurm
    monkeypatch.setenv("GLOBUS_CLIENT_SECRET", "do-not-export")
    monkeypatch.setenv("COSMIC_PROFILE", "site")
    install(
        "sbatch",
        f"""cat > {tmp_path}/stdin.txt
if [ "$(grep -c '^sbatch' {calls})" -eq 1 ]; then
  echo 'sbatch: error: Batch job submission failed: {UNREACHABLE}' >&2; exit 1
fi
echo "$FOO ${{GLOBUS_CLIENT_SECRET:-unset}} $COSMIC_PROFILE ${{SLURM_TIME_FORMAT:-unset}}" >{tmp_path}/env.txt
echo '42;cluster'""",
    )
    job_id = slurm_cli.sbatch(
        "#!/bin/bash\necho hi\n", workdir="/w", env={"FOO": "bar"}, args=["--job-name=j"]
    )
    assert job_id == "42"
    assert _calls(calls) == ["sbatch --parsable --chdir=/w --job-name=j"] * 2
    assert (tmp_path / "stdin.txt").read_text() == "#!/bin/bash\necho hi\n"
    assert (tmp_path / "env.txt").read_text() == "bar unset site unset\n"


def test_a_refused_submission_fails_at_once_with_slurms_reason(fake_slurm):
    install, calls = fake_slurm
    install(
        "sbatch", "echo 'sbatch: error: Batch job submission failed: Invalid qos specification' >&2; exit 1"
    )
    with pytest.raises(SlurmCommandError, match="Invalid qos specification"):
        slurm_cli.sbatch("#!/bin/bash\ntrue\n")
    assert len(_calls(calls)) == 1


def test_missing_slurm_commands_are_reported(fake_slurm, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(SlurmCommandError, match="sinfo not found: is Slurm installed"):
        slurm_cli.sinfo()


def test_finished_jobs_come_from_the_completion_file_without_slurmdbd(fake_slurm):
    install, calls = fake_slurm
    install("squeue", "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1")
    install(
        "sacct",
        """case " $* " in
  *" -c "*) printf '7|CANCELLED by 0|0:15|Unknown|1700000005|recon.k.1\\n'
            printf '8|TIMEOUT|0:0|1700000000|1700000060|x\\n' ;;
  *) echo 'Slurm accounting storage is disabled' >&2; exit 1 ;;
esac""",
    )
    jobs = slurm_cli.job_states(["7", "8", "9"])
    assert jobs["7"] == slurm_cli.SlurmJob("7", "recon.k.1", "CANCELLED", "0:15", None, 1700000005.0, None)
    assert jobs["8"].state == "TIMEOUT"
    assert "9" not in jobs
    # The first sacct call learns that only the completion file exists; later calls go there directly.
    slurm_cli.job_states(["7"])
    sacct_calls = [c for c in _calls(calls) if c.startswith("sacct")]
    assert len(sacct_calls) == 3 and " -c" not in sacct_calls[0] and sacct_calls[2].endswith("-c")


def test_find_job_filters_names_itself_and_takes_the_newest(fake_slurm):
    """``sacct -c`` ignores --name, so other jobs' records come back too."""
    install, _ = fake_slurm
    install("squeue", "exit 0")
    install(
        "sacct",
        """printf '9|FAILED|3:0|1|2|recon.a\\n10|COMPLETED|0:0|3|4|recon.b\\n11|COMPLETED|0:0|5|6|recon.a\\n'
printf '12|RUNNING|0:0|7|0|recon.ab\\n'""",
    )
    assert slurm_cli.find_job("recon.a").job_id == "11"
    assert slurm_cli.find_job("recon.c") is None


@pytest.mark.parametrize(
    ("raw", "state"),
    [("CANCELLED by 0", "CANCELLED"), ("FAILED+", "FAILED"), ("completed", "COMPLETED"), ("", "UNKNOWN")],
)
def test_states_are_normalised(raw, state):
    assert slurm_cli.normalise_state(raw) == state


@pytest.mark.parametrize("bad", ["1;rm -rf /", "", "12,13"])
def test_job_ids_are_checked(bad):
    with pytest.raises(ValueError, match="not a Slurm job id"):
        slurm_cli.job_states([bad])


# --- against the real local Slurm -------------------------------------------------------------------
def _wait_for(job_id: str, states: set[str], timeout_s: float = 60) -> slurm_cli.SlurmJob:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = slurm_cli.job_states([job_id]).get(job_id)
        if job is not None and job.state in states:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} not in {states} after {timeout_s} s: {job}")


@pytest.mark.slurm
def test_real_slurm_lifecycle(slurm_cluster, tmp_path, unique):
    out = tmp_path / "out"
    out.mkdir()
    failing = slurm_cli.sbatch(
        "#!/bin/bash\necho about to fail\nexit 3\n", workdir=str(out), args=[f"--job-name={unique}.fail"]
    )
    sleeper = slurm_cli.sbatch(
        f"#!/bin/bash\n#SBATCH --job-name={unique}.sleep\n#SBATCH --output={out}/sleep.out\nsleep 300\n"
    )
    both = slurm_cli.job_states([failing, sleeper, "999999"])
    assert set(both) == {failing, sleeper}
    assert both[sleeper].name == f"{unique}.sleep" and both[sleeper].stdout_path == f"{out}/sleep.out"
    assert both[sleeper].state in {"PENDING", "RUNNING"} and both[sleeper].exit_code is None
    assert slurm_cli.find_job(f"{unique}.sleep").job_id == sleeper

    failed = _wait_for(failing, {"FAILED"})
    assert failed.exit_code == "3:0" and failed.start is not None and failed.end >= failed.start
    assert (out / f"slurm-{failing}.out").read_text() == "about to fail\n"

    slurm_cli.scancel(sleeper)
    assert _wait_for(sleeper, {"CANCELLED"}).end is not None
    slurm_cli.scancel(sleeper)  # already ended: not an error

    # The completion-file fallback parses what the real `sacct -c` writes for these jobs.
    deadline = time.monotonic() + 30
    while {job.job_id for job in slurm_cli._accounting(["-j", f"{failing},{sleeper}"])} != {failing, sleeper}:
        assert time.monotonic() < deadline, "jobs never reached the completion file"
        time.sleep(0.5)
    recorded = {job.job_id: job for job in slurm_cli._accounting(["-j", f"{failing},{sleeper}"])}
    assert (recorded[failing].state, recorded[failing].exit_code) == ("FAILED", "3:0")
    assert recorded[sleeper].state == "CANCELLED" and recorded[sleeper].name == f"{unique}.sleep"
    assert slurm_cli.find_job(f"{unique}.nothing") is None


def test_sbatch_that_may_have_gone_through_is_found_by_name_not_repeated(fake_slurm, tmp_path):
    """SlurmCompute: an sbatch whose answer was lost becomes the job squeue then shows under its name."""
    from cosmic_dagster.compute.protocol import JobSpec
    from cosmic_dagster.compute.slurm.compute import SlurmCompute
    from cosmic_dagster.domain.ledger import Ledger

    install, calls = fake_slurm
    install("sinfo", "echo 'debug up 1 idle'")
    install("sacct", "true")
    install(
        "sbatch", "cat >/dev/null; echo 'sbatch: error: Socket timed out on send/recv operation' >&2; exit 1"
    )
    # The controller queued the job all the same: squeue shows it once sbatch has run.
    install(
        "squeue",
        f"grep -q '^sbatch' {calls} && echo '77|COMPLETED|0|1700000000|1700000010|/w/o|recon.k.1|'; true",
    )
    compute = SlurmCompute(Ledger(tmp_path / "l.sqlite"), poll_interval_s=0.01, not_found_grace_s=5)
    spec = JobSpec("recon.k.1", "#!/bin/bash\ntrue\n", str(tmp_path / "w"))

    outcome = compute.run_batch([spec])[spec.name]

    assert (outcome.job_id, outcome.state, outcome.reattached) == ("77", "COMPLETED", False)
    assert [c.split()[0] for c in _calls(calls)].count("sbatch") == 1
