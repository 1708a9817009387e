"""Job parameters of the mini-batch engine (``python -m cosmic_dagster.ptycho.batched``).

``device`` decides what the job asks Slurm for: ``cpu`` a CPU node's cores, ``gpu`` and ``auto`` one
GPU (``auto`` runs on the CPU where the job has none, e.g. a local run). ``gpu_setup`` are the shell
lines that make CuPy importable on the GPU node, written before the command only in a GPU job: at
NERSC the CUDA libraries come from the ``cudatoolkit`` module (CuPy itself from the job's Python
environment, ``pip install cosmic-dagster[gpu]``). The default loads it only where a ``module``
command exists, so the same script runs locally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cosmic_dagster.compute.jobscript import JobScriptError, Resources, _check_int, _check_number, _q
from cosmic_dagster.ptycho import outputs
from cosmic_dagster.ptycho.xp import DEVICES

DEFAULT_GPU_SETUP = "if type module >/dev/null 2>&1; then module load cudatoolkit; fi"
#: Cores a CPU job of this engine asks for (the engine runs one thread per core it may use).
CPU_CORES = 4
#: Cores that come with one GPU on Perlmutter (64 for 4), for the host side of a GPU job.
CPUS_PER_GPU = 16


@dataclass(frozen=True)
class BatchedParams:
    """The mini-batch engine: one GPU (``device`` auto/gpu) or ``CPU_CORES`` cores (``cpu``)."""

    engine: ClassVar[str] = "batched"
    iterations: int = 100
    probe_refine_start: int = 5
    seed: int = 0
    probe_defocus_um: float | None = None
    device: str = "auto"
    batch_size: int | None = None
    """None: the engine's default, a function of the scan only (the same batches on every device)."""
    gpu_setup: str = DEFAULT_GPU_SETUP

    def __post_init__(self) -> None:
        _check_int("BatchedParams", "iterations", self.iterations, 1)
        _check_int("BatchedParams", "probe_refine_start", self.probe_refine_start, 0)
        _check_int("BatchedParams", "seed", self.seed, 0)
        if self.probe_defocus_um is not None:
            _check_number("BatchedParams", "probe_defocus_um", self.probe_defocus_um)
        if self.device not in DEVICES:
            raise JobScriptError(
                f"BatchedParams.device must be one of {', '.join(DEVICES)}, got {self.device!r}"
            )
        if self.batch_size is not None:
            _check_int("BatchedParams", "batch_size", self.batch_size, 1)
        if not isinstance(self.gpu_setup, str) or "\0" in self.gpu_setup:
            raise JobScriptError(f"BatchedParams.gpu_setup must be shell text, got {self.gpu_setup!r}")

    def resources(self) -> Resources:
        if self.device == "cpu":
            return Resources(cpus=CPU_CORES, gpus=0, time_limit="00:30:00")
        return Resources(cpus=CPUS_PER_GPU, gpus=1, time_limit="00:30:00")

    def command(self, *, input_path: str, workdir: str, python: str) -> str:
        words = [
            _q("python", python),
            "-m cosmic_dagster.ptycho.batched",
            _q("input_path", input_path),
            _q("workdir", outputs.in_workdir(workdir, outputs.RECONSTRUCTION)),
            f"--iterations {self.iterations}",
            f"--probe-refine-start {self.probe_refine_start}",
            f"--seed {self.seed}",
            f"--device {self.device}",
        ]
        if self.batch_size is not None:
            words.append(f"--batch-size {self.batch_size}")
        if self.probe_defocus_um is not None:
            words.append(f"--probe-defocus-um {self.probe_defocus_um!r}")
        words += [
            f"--summary {_q('workdir', outputs.in_workdir(workdir, outputs.SUMMARY))}",
            f"--preview {_q('workdir', outputs.in_workdir(workdir, outputs.PREVIEW))}",
        ]
        command = " ".join(words)
        setup = self.gpu_setup.strip("\n") if self.resources().gpus else ""
        return f"{setup}\n{command}" if setup.strip() else command
