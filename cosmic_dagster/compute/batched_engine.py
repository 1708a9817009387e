"""Job parameters of the mini-batch engine (``python -m cosmic_dagster.ptycho.batched``).

``device`` decides what the job asks Slurm for: ``cpu`` a CPU node's cores, ``gpu`` and ``auto`` one
GPU (``auto`` runs on the CPU where the job has none, e.g. a local run). A GPU job also runs the
site's GPU setup lines (``COSMIC_GPU_JOB_SETUP``, see :func:`jobscript.render_script`) that make
CuPy importable there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cosmic_dagster.compute.jobscript import (
    _CPUS_PER_GPU,
    JobScriptError,
    Resources,
    _check_int,
    _check_number,
    engine_cli_command,
)
from cosmic_dagster.ptycho.xp import DEVICES

#: Cores a CPU job of this engine asks for (the engine runs one thread per core it may use).
CPU_CORES = 4


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

    def resources(self) -> Resources:
        if self.device == "cpu":
            return Resources(cpus=CPU_CORES, gpus=0, time_limit="00:30:00")
        return Resources(cpus=_CPUS_PER_GPU, gpus=1, time_limit="00:30:00")

    def command(self, *, input_path: str, workdir: str, python: str) -> str:
        options = [f"--device {self.device}"]
        if self.batch_size is not None:
            options.append(f"--batch-size {self.batch_size}")
        return engine_cli_command(
            "cosmic_dagster.ptycho.batched",
            self,
            options,
            input_path=input_path,
            workdir=workdir,
            python=python,
        )
