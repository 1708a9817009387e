"""Reconstruction jobs on NERSC Perlmutter through the Superfacility API (sfapi-client 0.6).

The submit-or-reattach-and-wait rules live in :class:`~cosmic_dagster.compute.base.SchedulerCompute`;
this adapter translates them to SFAPI calls:

* availability: ``compute.status`` (sfapi-client never checks it itself) and one authenticated call;
* submit: the rendered script inline (``isPath=false``) after one ``mkdir -p`` of the work
  directories of the batch (Slurm cannot open ``--output`` in a missing directory); the job name
  and output file are made explicit in the script so the job can be found by name and its log
  read back. The POST is sent
  exactly once per attempt (sfapi-client's own retry of a POST NERSC may have accepted makes
  twins): a refusal (401, 429, no connection) is retried, an answer lost after the request went
  out is :class:`~cosmic_dagster.compute.base.SubmissionUnconfirmed`, and once NERSC answered with
  a task id the job id is read from that task, never by posting again;
* state: one list call per poll for all jobs (``kwargs=jobid=a,b,c``), one sacct call for the ids
  squeue no longer shows; unknown ids are left out (the base class grants a grace period);
* by name: one user-wide squeue listing for all names of a batch, one sacct listing for the names
  squeue does not show;
* errors: sfapi-client raises ``SfApiError``, ``httpx.HTTPStatusError``, ``tenacity.RetryError``
  and authlib's ``OAuthError``; all become :class:`SfapiError` or ``ComputeUnavailable`` with a
  message naming the call. Transient failures of read-only calls are retried for
  ``api_patience_s``, a 401 is answered once by a fresh token; a second 401 means NERSC refuses
  the client's credentials (:class:`SfapiAuthRefused`), said as such.

Credentials come from files, like the old system: ``PATH_NERSC_ID`` (client id) and
``PATH_NERSC_PRI_KEY`` (PEM private key), or ``SFAPI_CLIENT_ID`` / ``SFAPI_KEY_FILE``. The key is
never logged nor put in a message or repr.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import httpx
import pydantic
import tenacity
from authlib.integrations.base_client.errors import OAuthError
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sfapi_client import Client, SfApiError
from sfapi_client.compute import Compute, Machine
from sfapi_client.jobs import JobCommand, JobSacct, JobSqueue

from cosmic_dagster.compute.base import JobStatus, SchedulerCompute, SubmissionUnconfirmed
from cosmic_dagster.compute.protocol import TERMINAL_STATES, ComputeUnavailable, JobSpec
from cosmic_dagster.config import ConfigError
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.errors import CosmicError
from cosmic_dagster.files import read_private_file, tail_lines

log = logging.getLogger(__name__)

DEFAULT_API_BASE_URL = "https://api.nersc.gov/api/v1.2"
DEFAULT_TOKEN_URL = "https://oidc.nersc.gov/c2id/token"
#: Where a person looks at a job. Our choice of Iris page pattern, not checked against NERSC docs.
JOB_URL_TEMPLATE = "https://iris.nersc.gov/jobs/{job_id}"
#: Slurm prints times in the cluster's local time; Perlmutter is in Berkeley.
NERSC_TIMEZONE = "America/Los_Angeles"
_TRANSIENT_HTTP = frozenset({429, 500, 502, 503, 504})
#: Failures that prove a request was not processed, so even a POST may be sent again.
_NOT_PROCESSED = (httpx.ConnectError, httpx.ConnectTimeout)
#: sfapi-client sleeps a fixed 1 s between polls of a task.
TASK_POLL_S = 1.0
_JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?")
_SHORT_OPTIONS = {
    "J": "job-name",
    "o": "output",
    "e": "error",
    "D": "chdir",
    "t": "time",
    "A": "account",
    "q": "qos",
    "C": "constraint",
    "N": "nodes",
    "n": "ntasks",
    "c": "cpus-per-task",
    "p": "partition",
    "G": "gpus",
}
T = TypeVar("T")


# --- job scripts ----------------------------------------------------------------------------------
def _header_end(lines: list[str]) -> int:
    """Index of the first line Slurm stops reading ``#SBATCH`` at (first non-comment, non-blank)."""
    for i, line in enumerate(lines[1:], start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return i
    return len(lines)


def sbatch_directives(script: str) -> dict[str, str]:
    """The ``#SBATCH`` options of a batch script by long name (``-J x`` -> ``{"job-name": "x"}``)."""
    lines = script.splitlines()
    options: dict[str, str] = {}
    for line in lines[1 : _header_end(lines)]:
        parts = line.strip().split(None, 1)
        if len(parts) < 2 or parts[0] != "#SBATCH":
            continue
        try:
            tokens = shlex.split(parts[1], comments=True)
        except ValueError:
            continue  # sbatch would reject the line too; nothing reliable to read
        i = 0
        while i < len(tokens):
            token = tokens[i]
            following = tokens[i + 1] if i + 1 < len(tokens) and not tokens[i + 1].startswith("-") else None
            if token.startswith("--"):
                name, eq, value = token[2:].partition("=")
                if not eq and following is not None:
                    value, i = following, i + 1
                options[name] = value
            elif token.startswith("-") and len(token) >= 2:
                name = _SHORT_OPTIONS.get(token[1], token[1])
                value = token[2:]
                if not value and following is not None:
                    value, i = following, i + 1
                options[name] = value
            i += 1
    return options


def sfapi_workdir(spec: JobSpec) -> str:
    """``spec.workdir``, checked: absolute at NERSC, and usable unquoted in ``#SBATCH`` lines."""
    if not spec.workdir.startswith("/"):
        raise ValueError(f"job {spec.name}: workdir {spec.workdir!r} must be an absolute path at NERSC")
    if re.search(r"[\s'\"\\]", spec.workdir):
        raise ValueError(
            f"job {spec.name}: workdir {spec.workdir!r} must not contain spaces, quotes or backslashes"
        )
    return spec.workdir


def sfapi_script(spec: JobSpec) -> str:
    """``spec.script`` as submitted: job name and output file made explicit, ``spec.env`` exported.

    The name is how a retried step finds its job; the output file is where failure logs are read."""
    if not spec.script.startswith("#!"):
        raise ValueError(f"job {spec.name}: a batch script must start with '#!' (an interpreter line)")
    sfapi_workdir(spec)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", spec.name):
        raise ValueError(f"job name {spec.name!r}: only letters, digits, '_', '.' and '-' are allowed")
    directives = sbatch_directives(spec.script)
    named = directives.get("job-name")
    if named is not None and named != spec.name:
        raise ValueError(f"the script's --job-name {named!r} differs from the job name {spec.name!r}")
    added = [] if named else [f"#SBATCH --job-name={spec.name}"]
    if "output" not in directives:
        added.append(f"#SBATCH --output={spec.workdir}/job.out")
    exports = []
    for key, value in spec.env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"job {spec.name}: environment variable name {key!r} is not valid")
        exports.append(f"export {key}={shlex.quote(value)}")
    lines = spec.script.splitlines()
    end = _header_end(lines)
    text = "\n".join([lines[0], *added, *lines[1:end], *exports, *lines[end:]])
    return text + "\n" if spec.script.endswith("\n") else text


# --- credentials -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SfapiCredentials:
    """An Iris SFAPI client: its id and RSA private key (PEM). The key never appears in repr."""

    client_id: str
    private_key: str = field(repr=False)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.client_id or ""):
            raise ConfigError("the SFAPI client id must be a non-empty string of letters and digits")
        try:
            key = load_pem_private_key(self.private_key.encode(), password=None)
        except (ValueError, TypeError):
            raise ConfigError("the SFAPI private key is not an unencrypted PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError("the SFAPI private key must be an RSA key (SFAPI signs with RS256)")

    @classmethod
    def from_files(
        cls, key_file: str | Path, *, client_id: str | None = None, client_id_file: str | Path | None = None
    ) -> SfapiCredentials:
        """Key from a mode-600 PEM file; id from ``client_id``, ``client_id_file`` or the key file's
        first line (sfapi-client's key-file format). Ids given twice must agree."""
        text = read_private_file(key_file, "SFAPI private key file", ConfigError)
        if "-----BEGIN" not in text:
            raise ConfigError(f"SFAPI private key file {key_file} contains no PEM block")
        head, pem = text.split("-----BEGIN", 1)
        ids = [client_id.strip()] if client_id else []
        if client_id_file:
            try:
                ids.append(Path(client_id_file).read_text().strip())
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the SFAPI client id file {client_id_file}: {exc.strerror}"
                ) from None
        ids.extend(line.strip() for line in head.splitlines()[:1] if line.strip())
        if not ids:
            raise ConfigError("no SFAPI client id: set PATH_NERSC_ID (a file) or SFAPI_CLIENT_ID")
        if len(set(ids)) > 1:
            raise ConfigError("the SFAPI client ids given (variable, id file, key file) disagree")
        return cls(ids[0], "-----BEGIN" + pem)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SfapiCredentials:
        """``PATH_NERSC_PRI_KEY`` or ``SFAPI_KEY_FILE``; ``PATH_NERSC_ID`` or ``SFAPI_CLIENT_ID``."""
        env = os.environ if env is None else env
        key_files = {env[n] for n in ("PATH_NERSC_PRI_KEY", "SFAPI_KEY_FILE") if env.get(n)}
        if not key_files:
            raise ConfigError(
                "no SFAPI private key: set PATH_NERSC_PRI_KEY (or SFAPI_KEY_FILE) to the PEM file"
            )
        if len(key_files) > 1:
            raise ConfigError("PATH_NERSC_PRI_KEY and SFAPI_KEY_FILE name different files; set only one")
        return cls.from_files(
            key_files.pop(), client_id=env.get("SFAPI_CLIENT_ID"), client_id_file=env.get("PATH_NERSC_ID")
        )


# --- the adapter -----------------------------------------------------------------------------------
class SfapiError(CosmicError, RuntimeError):
    """An SFAPI call failed; the message names the call and the reason (never a secret)."""


class SfapiAuthRefused(SfapiError):
    """NERSC refuses the client's credentials (a 401 that a fresh token does not cure)."""


def _problem(exc: BaseException | None) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__ if exc is not None else "unknown error"


class SfapiCompute(SchedulerCompute):
    """Jobs on a NERSC machine through SFAPI; one client and one ``Compute`` shared by all calls."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        credentials: SfapiCredentials,
        api_base_url: str = DEFAULT_API_BASE_URL,
        token_url: str = DEFAULT_TOKEN_URL,
        machine: str = "perlmutter",
        poll_interval_s: float = 10.0,
        max_poll_interval_s: float = 60.0,
        not_found_grace_s: float = 120.0,
        timeout_s: float | None = None,
        api_patience_s: float = 600.0,
        scheduler_timezone: str = NERSC_TIMEZONE,
        job_url_template: str = JOB_URL_TEMPLATE,
    ):
        super().__init__(
            ledger,
            poll_interval_s=poll_interval_s,
            max_poll_interval_s=max_poll_interval_s,
            not_found_grace_s=not_found_grace_s,
            timeout_s=timeout_s,
        )
        try:
            self.machine = Machine(machine)
        except ValueError:
            raise ConfigError(
                f"unknown NERSC machine {machine!r}: expected one of {[m.value for m in Machine]}"
            ) from None
        self.credentials = credentials
        self.api_base_url = api_base_url.rstrip("/")
        self.token_url = token_url
        self.api_patience_s = api_patience_s
        self.tz = ZoneInfo(scheduler_timezone)
        self.job_url_template = job_url_template
        self._client_obj: Client | None = None
        self._compute_obj: Compute | None = None
        self._user: str | None = None

    @classmethod
    def from_env(cls, ledger: Ledger, env: Mapping[str, str] | None = None, **kw: object) -> SfapiCompute:
        """Credentials from the environment; ``SFAPI_API_BASE_URL`` / ``SFAPI_TOKEN_URL`` override the
        NERSC endpoints (used to point at the emulator)."""
        env = os.environ if env is None else env
        kw.setdefault("api_base_url", env.get("SFAPI_API_BASE_URL") or DEFAULT_API_BASE_URL)
        kw.setdefault("token_url", env.get("SFAPI_TOKEN_URL") or DEFAULT_TOKEN_URL)
        return cls(ledger, credentials=SfapiCredentials.from_env(env), **kw)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"SfapiCompute(machine={self.machine.value!r}, api_base_url={self.api_base_url!r})"

    def job_url(self, job_id: str) -> str:
        return self.job_url_template.format(job_id=job_id)

    def close(self) -> None:
        if self._client_obj is not None:
            self._client_obj.close()
        self._client_obj = self._compute_obj = None

    # --- sfapi-client plumbing -------------------------------------------------------------------
    def _client(self) -> Client:
        if self._client_obj is None:
            self._client_obj = Client(
                client_id=self.credentials.client_id,
                secret=self.credentials.private_key,
                api_base_url=self.api_base_url,
                token_url=self.token_url,
            )
        return self._client_obj

    def _compute(self) -> Compute:
        if self._compute_obj is None:
            self._compute_obj = self._call(
                f"reading the status of {self.machine.value}", lambda: self._client().compute(self.machine)
            )
        return self._compute_obj

    def _account(self) -> str:
        if self._user is None:
            self._user = self._call("reading the SFAPI account", lambda: self._client().user().name)
        return self._user

    def _call(self, what: str, fn: Callable[[], T], *, patient: bool = True, once: bool = False) -> T:
        """``fn()`` with sfapi-client's exceptions turned into clear ones.

        ``patient``: retry transient failures (5xx, 429, network) for ``api_patience_s``.
        ``once``: ``fn`` may take effect even when its answer is lost (a POST): only failures that
        prove it was not processed are retried, others raise SubmissionUnconfirmed. A 401 gets one
        retry with a fresh client (new token); a refused request took no effect."""
        deadline = time.monotonic() + (self.api_patience_s if patient else 0.0)
        delay = self.poll_interval_s  # never retry faster than we poll
        renewed = False
        while True:
            try:
                return fn()
            except SfApiError as exc:
                raise SfapiError(f"{what}: {exc.message}") from None
            except OAuthError as exc:
                refusal = self._refused(what, f"token endpoint answered {exc.error}")
                raise ComputeUnavailable(refusal) from None
            except pydantic.ValidationError as exc:
                raise SfapiError(f"{what}: unexpected answer from SFAPI: {exc.errors()[0]['msg']}") from None
            except httpx.HTTPStatusError as exc:
                code = exc.response.status_code
                request = f"{exc.request.method} {exc.request.url.path}"
                if code == 401 and not renewed:
                    renewed = True
                    self.close()
                    continue
                if code == 401:
                    raise SfapiAuthRefused(
                        self._refused(what, f"HTTP 401 on {request}, also with a fresh token")
                    ) from None
                if code not in _TRANSIENT_HTTP:
                    raise SfapiError(f"{what}: HTTP {code} from {request}") from None
                problem = f"HTTP {code}"
                if once and code != 429:
                    raise SubmissionUnconfirmed(f"{what}: {problem}; NERSC may have accepted it") from None
            except tenacity.RetryError as exc:
                problem = f"{_problem(exc.last_attempt.exception())} after sfapi-client's retries"
            except httpx.TransportError as exc:
                problem = type(exc).__name__
                if once and not isinstance(exc, _NOT_PROCESSED):
                    raise SubmissionUnconfirmed(f"{what}: {problem}; NERSC may have accepted it") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SfapiError(f"{what}: NERSC SFAPI failing ({problem})")
            log.warning("%s: %s; retrying in %.1f s", what, problem, min(delay, remaining))
            self.sleep(min(delay, remaining))
            delay = min(delay * 2, self.max_poll_interval_s)

    def _refused(self, what: str, detail: str) -> str:
        return (
            f"{what}: NERSC refused the credentials of SFAPI client {self.credentials.client_id} "
            f"({detail}); check in Iris that this client and its key are still valid and that it "
            "may be used from this machine's IP address"
        )

    def _time(self, value: str | None) -> float | None:
        if not value or value in ("N/A", "Unknown", "None"):
            return None
        try:
            return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=self.tz).timestamp()
        except ValueError:
            return None

    def _from_squeue(self, job: JobSqueue) -> JobStatus:
        state = job.state.value if job.state else "UNKNOWN"
        started = self._time(job.start_time) if state != "PENDING" else None
        ended = self._time(job.end_time) if state in TERMINAL_STATES else None
        return JobStatus(str(job.jobid), state, started, ended)

    def _from_sacct(self, job: JobSacct) -> JobStatus:
        state = job.state.value if job.state else "UNKNOWN"
        ended = self._time(job.end) if state in TERMINAL_STATES else None
        return JobStatus(str(job.jobid), state, self._time(job.start), ended)

    @staticmethod
    def _check_ids(job_ids: Sequence[str]) -> list[str]:
        ids = [str(job_id) for job_id in job_ids]
        bad = [job_id for job_id in ids if not _JOB_ID.fullmatch(job_id)]
        if bad:
            raise ValueError(f"not Slurm job ids: {bad}")
        return ids

    # --- SchedulerCompute ---------------------------------------------------------------------------
    def check_available(self) -> None:
        try:
            compute = self._call(
                f"reading the status of {self.machine.value}",
                lambda: self._client().compute(self.machine),
                patient=False,
            )
        except SfapiAuthRefused as exc:
            raise ComputeUnavailable(str(exc)) from None
        except SfapiError as exc:
            raise ComputeUnavailable(f"cannot reach NERSC SFAPI at {self.api_base_url}: {exc}") from None
        status = compute.status.value
        if status not in ("active", "degraded"):
            notes = "; ".join(compute.notes or []) or compute.description or ""
            raise ComputeUnavailable(
                f"{self.machine.value} is {status} according to NERSC{f' ({notes})' if notes else ''}; "
                "no job was submitted"
            )
        if status == "degraded":
            log.warning("%s is degraded; submitting anyway", self.machine.value)
        self._compute_obj = compute
        try:
            self._account()
        except SfapiAuthRefused as exc:
            raise ComputeUnavailable(str(exc)) from None
        except SfapiError as exc:
            raise ComputeUnavailable(f"SFAPI client cannot act for its user: {exc}") from None

    def prepare(self, specs: Sequence[JobSpec]) -> None:
        """One ``mkdir -p`` for the work directories of all jobs about to be submitted."""
        workdirs = [sfapi_workdir(spec) for spec in specs]
        mkdir = f"mkdir -p -- {' '.join(shlex.quote(d) for d in workdirs)}"
        what = f"creating {workdirs[0]}" + (f" and {len(workdirs) - 1} more" if len(workdirs) > 1 else "")
        self._call(what, lambda: self._compute().run(mkdir))

    def submit(self, spec: JobSpec) -> str:
        script = sfapi_script(spec)
        what = f"submitting job {spec.name}"
        task_id = self._call(what, lambda: self._post_job(script), once=True)
        return self._job_from_task(what, task_id)

    def _post_job(self, script: str) -> str:
        """POST the script exactly once (sfapi-client would repeat it on 502/503/504) -> task id."""
        post_once = Client.post.retry_with(retry=tenacity.retry_never)
        form = {"job": script, "isPath": False}
        answer = post_once(self._client(), f"compute/jobs/{self.machine.value}", form)
        body = answer.json()
        if body.get("status") != "OK" or not body.get("task_id"):
            raise SfApiError(body.get("error") or f"no task id in the answer: {body}")
        return str(body["task_id"])

    def _job_from_task(self, what: str, task_id: str) -> str:
        """The job id from the submission task; SubmissionUnconfirmed if the task cannot be read."""
        deadline = time.monotonic() + self.api_patience_s
        while True:
            try:
                task = self._call(
                    f"{what} (task {task_id})", lambda: self._client().get(f"tasks/{task_id}").json()
                )
            except SfapiAuthRefused:
                raise
            except SfapiError as exc:
                raise SubmissionUnconfirmed(f"{exc}; NERSC accepted the submission") from None
            status = task.get("status")
            if status == "completed":
                result = task.get("result")
                result = json.loads(result) if isinstance(result, str) else result or {}
                if result.get("status") == "ok" and result.get("jobid"):
                    return str(result["jobid"])
                error = result.get("error") or f"no job id in task {task_id}: {result}"
                raise SfapiError(f"{what}: refused at NERSC, no job was created: {error}")
            if status in ("failed", "cancelled"):
                raise SfapiError(f"{what}: task {task_id} {status}: {task.get('result')}")
            if time.monotonic() > deadline:
                raise SubmissionUnconfirmed(
                    f"{what}: task {task_id} still {status!r} after {self.api_patience_s:.0f} s"
                )
            self.sleep(min(TASK_POLL_S, self.poll_interval_s))

    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        ids = self._check_ids(job_ids)
        if not ids:
            return {}
        live = self._call("polling jobs (squeue)", lambda: self._compute().jobs(jobids=ids))
        found = {status.job_id: status for status in map(self._from_squeue, live) if status.job_id in ids}
        missing = [job_id for job_id in ids if job_id not in found]
        if missing:
            done = self._call(
                "polling jobs (sacct)", lambda: self._compute().jobs(jobids=missing, command=JobCommand.sacct)
            )
            found.update((s.job_id, s) for s in map(self._from_sacct, done) if s.job_id in missing)
        return found

    def find_by_name(self, name: str) -> JobStatus | None:
        return self.find_by_names([name]).get(name)

    def find_by_names(self, names: Sequence[str]) -> dict[str, JobStatus]:
        """The newest job of each name: one user-wide squeue listing, one sacct listing for the names
        squeue does not show."""
        wanted = set(names)
        if not wanted:
            return {}
        user = self._account()
        live = self._call(f"listing {user}'s jobs (squeue)", lambda: self._compute().jobs(user=user))
        found: dict[str, list[JobStatus]] = {}
        for job in live:
            if job.name in wanted:
                found.setdefault(job.name, []).append(self._from_squeue(job))
        unseen = wanted - found.keys()
        if unseen:
            done = self._call(
                f"listing {user}'s jobs (sacct)",
                lambda: self._compute().jobs(user=user, command=JobCommand.sacct),
            )
            for job in done:
                if job.jobname in unseen:
                    found.setdefault(job.jobname, []).append(self._from_sacct(job))
        newest = {}
        for name, statuses in found.items():
            jobs = [status for status in statuses if _JOB_ID.fullmatch(status.job_id)]  # no job steps
            if jobs:
                newest[name] = max(jobs, key=lambda s: tuple(int(p) for p in s.job_id.split("_")))
        return newest

    def log_paths(self, job_id: str, spec: JobSpec) -> list[str]:
        """The job's output file and, when separate, its error file (absolute paths at NERSC)."""
        directives = sbatch_directives(sfapi_script(spec))
        base = directives.get("chdir") or spec.workdir
        paths = []
        for option in ("output", "error"):
            pattern = directives.get(option)
            if pattern:
                path = pattern.replace("%j", job_id).replace("%x", spec.name)
                path = path if path.startswith("/") else f"{base}/{path}"
                if path not in paths:
                    paths.append(path)
        return paths

    def log_tail(self, job_id: str, spec: JobSpec, lines: int = 40) -> str:
        tails = []
        paths = self.log_paths(job_id, spec)
        for path in paths:
            text = self.fetch(path).decode("utf-8", errors="replace")
            tail = tail_lines(text, lines)
            tails.append(f"==> {path} <==\n{tail}" if len(paths) > 1 else tail)
        return "\n".join(tails)

    def fetch(self, path: str) -> bytes:
        if not path.startswith("/"):
            raise ValueError(f"{path!r}: an absolute path at NERSC is needed")

        def download() -> bytes:
            compute = self._compute()
            try:
                entries = compute.ls(path)
            except SfApiError as exc:
                if "No such file" in str(exc.message):
                    raise FileNotFoundError(f"{path} does not exist on {self.machine.value}") from None
                raise
            if not entries:
                raise FileNotFoundError(f"{path} does not exist on {self.machine.value}")
            if entries[0].is_dir() or len(entries) > 1:
                raise IsADirectoryError(f"{path} is a directory on {self.machine.value}")
            data = entries[0].download(binary=True).getvalue()
            # NERSC may answer ``is_binary: false`` (the text itself) even when asked for binary.
            return data.encode() if isinstance(data, str) else data

        return self._call(f"downloading {path}", download)

    def cancel(self, job_id: str) -> None:
        (job_id,) = self._check_ids([job_id])
        self._call(
            f"cancelling job {job_id}", lambda: JobSqueue(jobid=job_id, compute=self._compute()).cancel()
        )
