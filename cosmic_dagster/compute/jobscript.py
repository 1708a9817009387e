"""Reconstruction job scripts rendered from typed, validated parameters.

The old Prefect flow built its scripts with f-strings and crashed on a stray brace whenever the
refine periods were non-zero, and named files with spaces and colons. Here every parameter is a
typed dataclass field checked on construction, every path is shell-quoted, and names only use
``[A-Za-z0-9_.-]``. The same script runs under Slurm (with ``#SBATCH`` lines) or as a plain local
process (without them).

Slurm opens ``{workdir}/job.out`` before the script runs, so whoever submits a script with Slurm
directives must create ``workdir`` first.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from dataclasses import dataclass, field, fields
from typing import ClassVar, Protocol, runtime_checkable

from cosmic_dagster.errors import CosmicError
from cosmic_dagster.ptycho import outputs

DEFAULT_PTYCHOCAM_WRAPPER = (
    "/global/cfs/cdirs/als/data_mover/ptycho/cosmic_reconstruction_at_nersc/c_ptychocam/"
    "ptychocam_reconstruction.sh"
)
DEFAULT_CDTOOLS_WRAPPER = (
    "/global/cfs/cdirs/als/data_mover/ptycho/cosmic_reconstruction_at_nersc/c_cdtools/"
    "cdtools_reconstruction.sh"
)
#: NERSC QoS names (Perlmutter).
KNOWN_QOS = frozenset(
    {
        "regular",
        "debug",
        "shared",
        "realtime",
        "preempt",
        "premium",
        "overrun",
        "shared_interactive",
        "interactive",
    }
)
#: The log of every job (stdout and stderr), inside its workdir.
JOB_OUTPUT = "job.out"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_TIME = re.compile(r"([0-9]{1,4}):([0-9]{2}):([0-9]{2})")
_MEM = re.compile(r"[0-9]+[KMGT]?")
_CONSTRAINT = re.compile(r"[A-Za-z0-9_.&|,:*\[\]-]+")
_MAX_JOB_NAME = 200
#: Upper bound of a GPU engine's job at NERSC (the limit jobs have always run under).
_LONG_JOB = "04:00:00"
#: Perlmutter GPU nodes: 64 cores for 4 GPUs.
_CPUS_PER_GPU = 16


class JobScriptError(CosmicError, ValueError):
    """A job parameter or path that cannot go into a script."""


# --- validation helpers --------------------------------------------------------------------------
def _check_int(owner: str, field: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobScriptError(f"{owner}.{field} must be an integer, got {value!r}")
    if value < minimum:
        raise JobScriptError(f"{owner}.{field} must be >= {minimum}, got {value}")


def _check_bool(owner: str, field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise JobScriptError(f"{owner}.{field} must be True or False, got {value!r}")


def _check_number(owner: str, field: str, value: object, minimum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise JobScriptError(f"{owner}.{field} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise JobScriptError(f"{owner}.{field} must be >= {minimum}, got {value}")


def _check_time(what: str, value: object) -> None:
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if not match or int(match[2]) > 59 or int(match[3]) > 59 or not any(int(g) for g in match.groups()):
        raise JobScriptError(f"{what} must be a non-zero HH:MM:SS, got {value!r}")


def check_name(what: str, value: object) -> str:
    """A name (job, account, scan key...) restricted to ``[A-Za-z0-9_.-]``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise JobScriptError(f"{what} must be non-empty and use only A-Z a-z 0-9 _ . -, got {value!r}")
    return value


def check_path(what: str, value: object) -> str:
    """A path that can be shell-quoted safely: non-empty, no newline, no quote characters."""
    if not isinstance(value, str) or not value.strip():
        raise JobScriptError(f"{what} must be a non-empty path, got {value!r}")
    bad = sorted({c for c in value if c in "\n\r\0'\"`"})
    if bad:
        raise JobScriptError(f"{what} must not contain newlines or quotes ({bad!r}): {value!r}")
    return value


def _q(what: str, path: str) -> str:
    return shlex.quote(check_path(what, path))


# --- engine parameters ---------------------------------------------------------------------------
#: Field metadata: a parameter added after job names were in use. It counts in the job name only
#: when set to something other than its default, so existing jobs keep their names.
ADDED_LATER = {"digest": "when_set"}


@dataclass(frozen=True)
class Resources:
    """What one job of an engine uses: CPU cores, GPUs, and how long it may take at most."""

    cpus: int
    gpus: int
    time_limit: str

    def __post_init__(self) -> None:
        _check_int("Resources", "cpus", self.cpus, 1)
        _check_int("Resources", "gpus", self.gpus, 0)
        _check_time("Resources.time_limit", self.time_limit)


@runtime_checkable
class EngineParams(Protocol):
    """What every engine's parameter class provides (see :mod:`cosmic_dagster.compute.engines`)."""

    engine: ClassVar[str]

    def resources(self) -> Resources: ...

    def command(self, *, input_path: str, workdir: str, python: str) -> str: ...


class _RunParams(Protocol):
    """The run parameters every engine of the shared job command line has (read-only: the
    parameter classes are frozen)."""

    @property
    def iterations(self) -> int: ...
    @property
    def probe_refine_start(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def probe_defocus_um(self) -> float | None: ...


def engine_cli_command(
    module: str, params: _RunParams, options: list[str], *, input_path: str, workdir: str, python: str
) -> str:
    """The job command of an engine that uses ePIE's command line (``epie.cli_parser``): the run
    parameters every such engine has, then its own ``options``, then where the summary and the
    preview go."""
    words = [
        _q("python", python),
        f"-m {module}",
        _q("input_path", input_path),
        _q("workdir", outputs.in_workdir(workdir, outputs.RECONSTRUCTION)),
        f"--iterations {params.iterations}",
        f"--probe-refine-start {params.probe_refine_start}",
        f"--seed {params.seed}",
    ]
    if params.probe_defocus_um is not None:
        words.append(f"--probe-defocus-um {params.probe_defocus_um!r}")
    words += [
        *options,
        f"--summary {_q('workdir', outputs.in_workdir(workdir, outputs.SUMMARY))}",
        f"--preview {_q('workdir', outputs.in_workdir(workdir, outputs.PREVIEW))}",
    ]
    return " ".join(words)


@dataclass(frozen=True)
class EpieParams:
    """Our numpy ePIE engine (``python -m cosmic_dagster.ptycho.epie``): one CPU core, seconds.

    ``probe_defocus_um`` None lets the engine choose the probe defocus from the data (auto-focus);
    a number fixes it (signed, in the engine's convention, which is cdtools').
    ``average_iterations`` and ``likelihood_iterations`` None keep the engine's own number of
    object-averaging sweeps and of iterations of its likelihood finish."""

    engine: ClassVar[str] = "epie"
    iterations: int = 100
    probe_refine_start: int = 5
    seed: int = 0
    probe_defocus_um: float | None = field(default=None, metadata=ADDED_LATER)
    average_iterations: int | None = field(default=None, metadata=ADDED_LATER)
    likelihood_iterations: int | None = field(default=None, metadata=ADDED_LATER)

    def __post_init__(self) -> None:
        _check_int("EpieParams", "iterations", self.iterations, 1)
        _check_int("EpieParams", "probe_refine_start", self.probe_refine_start, 0)
        _check_int("EpieParams", "seed", self.seed, 0)
        if self.probe_defocus_um is not None:
            _check_number("EpieParams", "probe_defocus_um", self.probe_defocus_um)
        for name in ("average_iterations", "likelihood_iterations"):
            if getattr(self, name) is not None:
                _check_int("EpieParams", name, getattr(self, name), 0)

    def resources(self) -> Resources:
        return Resources(cpus=1, gpus=0, time_limit="00:30:00")

    def command(self, *, input_path: str, workdir: str, python: str) -> str:
        finishing = [
            f"--{name.replace('_', '-')} {value}"
            for name in ("average_iterations", "likelihood_iterations")
            if (value := getattr(self, name)) is not None
        ]
        return engine_cli_command(
            "cosmic_dagster.ptycho.epie",
            self,
            finishing,
            input_path=input_path,
            workdir=workdir,
            python=python,
        )


@dataclass(frozen=True)
class PtychocamParams:
    """NERSC's ptychocam wrapper: ``<wrapper> -i N [-r k] [-T k] [-M] <cxi>`` (0 = refinement off).

    ``gpus`` is how many GPUs the wrapper runs on (one MPI rank each); a Slurm job must request
    at least that many."""

    engine: ClassVar[str] = "ptychocam"
    iterations: int = 500
    illumination_refine_period: int = 0
    background_refine_period: int = 0
    enforce_illumination_mask: bool = False
    gpus: int = 4
    wrapper: str = DEFAULT_PTYCHOCAM_WRAPPER

    def __post_init__(self) -> None:
        _check_int("PtychocamParams", "iterations", self.iterations, 1)
        _check_int("PtychocamParams", "illumination_refine_period", self.illumination_refine_period, 0)
        _check_int("PtychocamParams", "background_refine_period", self.background_refine_period, 0)
        _check_bool("PtychocamParams", "enforce_illumination_mask", self.enforce_illumination_mask)
        _check_int("PtychocamParams", "gpus", self.gpus, 1)
        check_path("PtychocamParams.wrapper", self.wrapper)

    def resources(self) -> Resources:
        return Resources(cpus=self.gpus * _CPUS_PER_GPU, gpus=self.gpus, time_limit=_LONG_JOB)

    def command(self, *, input_path: str, workdir: str, python: str) -> str:
        words = [_q("PtychocamParams.wrapper", self.wrapper), f"-i {self.iterations}"]
        if self.illumination_refine_period:
            words.append(f"-r {self.illumination_refine_period}")
        if self.background_refine_period:
            words.append(f"-T {self.background_refine_period}")
        if self.enforce_illumination_mask:
            words.append("-M")
        words.append(_q("input_path", input_path))
        return " ".join(words)


@dataclass(frozen=True)
class CdtoolsParams:
    """NERSC's cdtools wrapper: ``<wrapper> <cxi>`` then 12 positional values in this field order."""

    engine: ClassVar[str] = "cdtools"
    run_split_reconstructions: bool = False
    n_modes: int = 1
    oversampling_factor: int = 1
    propagation_distance: float = 50e-6
    simulate_probe_translation: bool = True
    n_init_rounds: int = 1
    n_init_iter: int = 50
    n_final_iter: int = 50
    translation_randomization: float = 0
    probe_initialization: str | None = None
    init_background: bool = False
    probe_support_radius: float | None = None
    wrapper: str = DEFAULT_CDTOOLS_WRAPPER

    def __post_init__(self) -> None:
        owner = "CdtoolsParams"
        _check_bool(owner, "run_split_reconstructions", self.run_split_reconstructions)
        _check_int(owner, "n_modes", self.n_modes, 1)
        _check_int(owner, "oversampling_factor", self.oversampling_factor, 1)
        _check_number(owner, "propagation_distance", self.propagation_distance)
        _check_bool(owner, "simulate_probe_translation", self.simulate_probe_translation)
        _check_int(owner, "n_init_rounds", self.n_init_rounds, 0)
        _check_int(owner, "n_init_iter", self.n_init_iter, 1)
        _check_int(owner, "n_final_iter", self.n_final_iter, 1)
        _check_number(owner, "translation_randomization", self.translation_randomization, 0)
        if self.probe_initialization is not None:
            check_path(f"{owner}.probe_initialization", self.probe_initialization)
        _check_bool(owner, "init_background", self.init_background)
        if self.probe_support_radius is not None:
            _check_number(owner, "probe_support_radius", self.probe_support_radius, 0)
        check_path(f"{owner}.wrapper", self.wrapper)

    def resources(self) -> Resources:
        return Resources(cpus=_CPUS_PER_GPU, gpus=1, time_limit=_LONG_JOB)

    def positional_values(self) -> list[str]:
        """The 12 values as the wrapper receives them (Python literals: ``False``, ``None``, ``5e-05``)."""
        values = [
            self.run_split_reconstructions,
            self.n_modes,
            self.oversampling_factor,
            self.propagation_distance,
            self.simulate_probe_translation,
            self.n_init_rounds,
            self.n_init_iter,
            self.n_final_iter,
            self.translation_randomization,
            self.probe_initialization,
            self.init_background,
            self.probe_support_radius,
        ]
        return [shlex.quote(v) if isinstance(v, str) else repr(v) for v in values]

    def command(self, *, input_path: str, workdir: str, python: str) -> str:
        return " ".join(
            [
                _q("CdtoolsParams.wrapper", self.wrapper),
                _q("input_path", input_path),
                *self.positional_values(),
            ]
        )


# --- Slurm directives ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SlurmDirectives:
    """The site's ``#SBATCH`` options (the one definition of the Slurm settings); None leaves one out.

    What a job uses (cores, GPUs, node kind, default time limit) comes from its engine's
    :class:`Resources`: ``cpu_constraint``/``gpu_constraint`` name the site's node features for a
    CPU-only or a GPU job (Perlmutter: ``cpu``/``gpu``), and ``time_limit`` overrides the engine's.
    Job name, output and error file are not here: :func:`render_script` derives them."""

    account: str | None = None
    qos: str | None = None
    partition: str | None = None
    time_limit: str | None = None
    cpu_constraint: str | None = None
    gpu_constraint: str | None = None
    mem: str | None = None
    nodes: int = 1

    def __post_init__(self) -> None:
        if self.account is not None:
            check_name("SlurmDirectives.account", self.account)
        if self.qos is not None and self.qos not in KNOWN_QOS:
            raise JobScriptError(f"unknown QoS {self.qos!r}; known: {', '.join(sorted(KNOWN_QOS))}")
        for name in ("cpu_constraint", "gpu_constraint"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and _CONSTRAINT.fullmatch(value)):
                raise JobScriptError(f"SlurmDirectives.{name} is not a feature expression: {value!r}")
        _check_int("SlurmDirectives", "nodes", self.nodes, 1)
        if self.time_limit is not None:
            _check_time("SlurmDirectives.time_limit", self.time_limit)
        if self.partition is not None:
            check_name("SlurmDirectives.partition", self.partition)
        if self.mem is not None and not (isinstance(self.mem, str) and _MEM.fullmatch(self.mem)):
            raise JobScriptError(f"SlurmDirectives.mem must look like 4000, 500M or 8G, got {self.mem!r}")

    def lines(self, *, job_name: str, workdir: str, needs: Resources) -> list[str]:
        log = _q("workdir", outputs.in_workdir(workdir, JOB_OUTPUT))
        options: list[tuple[str, object]] = [
            ("job-name", check_name("job_name", job_name)),
            ("output", log),
            ("error", log),
            ("nodes", self.nodes),
            ("time", self.time_limit or needs.time_limit),
            ("account", self.account),
            ("qos", self.qos),
            ("constraint", self.gpu_constraint if needs.gpus else self.cpu_constraint),
            ("gpus", needs.gpus or None),
            ("partition", self.partition),
            ("cpus-per-task", needs.cpus),
            ("mem", self.mem),
        ]
        return [f"#SBATCH --{key}={value}" for key, value in options if value is not None]


# --- names and rendering -------------------------------------------------------------------------
def params_digest(params: EngineParams) -> str:
    """8 hex digits that change with the engine or any parameter (same parameters, same digest).

    A parameter marked :data:`ADDED_LATER` counts only when it differs from its default."""
    values = {
        f.name: getattr(params, f.name)
        for f in fields(params)  # type: ignore[arg-type]
        if f.metadata != ADDED_LATER or getattr(params, f.name) != f.default
    }
    payload = json.dumps({"engine": params.engine, **values}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


def job_name(asset: str, scan_key: str, params: EngineParams, *, workdir: str | None = None) -> str:
    """``<asset>.<scan_key>.<digest8>``: deterministic, so a rerun finds the job it already started.

    With ``workdir`` the digest also covers where the job writes: two deployments (or test runs)
    sharing one cluster never mistake each other's jobs for their own."""
    digest = params_digest(params)
    if workdir is not None:
        digest = hashlib.sha256(f"{digest}:{workdir}".encode()).hexdigest()[:8]
    name = f"{check_name('asset', asset)}.{check_name('scan_key', scan_key)}.{digest}"
    if len(name) > _MAX_JOB_NAME:
        raise JobScriptError(f"job name longer than {_MAX_JOB_NAME} characters: {name!r}")
    return name


def render_script(
    params: EngineParams,
    *,
    input_path: str,
    workdir: str,
    job_name: str,
    slurm: SlurmDirectives | None,
    python: str = "python3",
    setup: str = "",
    gpu_setup: str = "",
) -> str:
    """The complete job script: ``#SBATCH`` lines when ``slurm`` is given, then the engine command.

    The directives request what the engine uses (:meth:`EngineParams.resources`).

    ``setup`` is inserted verbatim before the command (``module load ...``, ``source venv``), then
    ``gpu_setup`` if the engine uses a GPU (the CUDA libraries CuPy needs, e.g. at NERSC)."""
    if not isinstance(params, EngineParams):
        raise JobScriptError(f"unknown engine parameters: {type(params).__name__}")
    check_name("job_name", job_name)
    check_path("workdir", workdir)
    lines = ["#!/bin/bash"]
    if slurm is not None:
        lines += slurm.lines(job_name=job_name, workdir=workdir, needs=params.resources())
    lines += [
        f"# {params.engine} reconstruction {job_name}",
        "set -euo pipefail",
        f"mkdir -p {_q('workdir', workdir)}",
        f"cd {_q('workdir', workdir)}",
    ]
    for text in (setup, gpu_setup if params.resources().gpus else ""):
        if text.strip():
            lines += text.strip("\n").splitlines()
    lines.append(params.command(input_path=input_path, workdir=workdir, python=python))
    return "\n".join(lines) + "\n"
