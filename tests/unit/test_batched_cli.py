"""The mini-batch engine as a job: auto-focus on both defocus signs, the command's outputs and exit
codes (shared with ePIE), and the job script it gets (GPU request and setup lines only for a GPU job)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from cosmic_dagster.cli.main import _recon_config, build_parser
from cosmic_dagster.compute import engines, jobscript
from cosmic_dagster.compute.batched_engine import CPU_CORES, BatchedParams
from cosmic_dagster.compute.jobscript import EpieParams
from cosmic_dagster.compute.protocol import JobOutcome
from cosmic_dagster.config import NERSC_GPU_SETUP, Settings, SiteSettings
from cosmic_dagster.defs.assets import ReconstructionConfig, _recon_metadata
from cosmic_dagster.defs.resources import LocalComputeResource
from cosmic_dagster.pipeline.stages import Reconstruction
from cosmic_dagster.ptycho import batched, cxi, optics, outputs, quality, simulate
from cosmic_dagster.ptycho import xp as backends
from cosmic_dagster.ptycho.simulate import SimulationSpec

NAME = "NS_230216033_ccdframes_0_0.cxi"
NOMINAL = optics.cosmic_probe_defocus_m(800.0)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate.write_scan(tmp_path_factory.mktemp("tiny") / NAME, SimulationSpec.tiny())


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cosmic_dagster.ptycho.batched", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("changes", [{}, {"defocus_m": -NOMINAL}], ids=["usual-side", "other-side"])
def test_auto_focus_finds_either_sign(tmp_path: Path, changes: dict) -> None:
    spec = replace(SimulationSpec.tiny(), **changes)
    scan = cxi.load_scan(simulate.write_scan(tmp_path / NAME, spec))
    recon = batched.reconstruct(scan, 50, backend=backends.cpu_backend(1))
    assert recon.focus is not None and recon.focus.chosen_by == "auto"
    assert np.sign(recon.focus.defocus_m) == np.sign(spec.resolved_defocus_m * spec.fft_sign)
    assert scan.ground_truth is not None
    assert quality.object_error(recon.object, scan.ground_truth, illumination=recon.illumination) <= 0.15


def test_cli_writes_the_same_outputs_as_epie(tiny_path: Path, tmp_path: Path) -> None:
    out, summary_path, preview = (
        tmp_path / "r" / "out.h5",
        tmp_path / "summary.json",
        tmp_path / "preview.png",
    )
    done = _cli(
        tiny_path, out, "--iterations", "30", "--device", "cpu", "--workers", "2", "--batch-size", "4",
        "--summary", summary_path, "--preview", preview,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "batched: device CPU, 2 thread(s) (asked: cpu)" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("batched: done in ")
    summary = outputs.read_summary(summary_path.read_text())
    assert summary["engine"] == "batched" and summary["device"] == "cpu"
    assert summary["peak_gpu_memory_bytes"] == 0 and summary["parameters"]["streamed"] is False
    assert summary["parameters"]["batch_size"] == 4 and len(summary["fourier_error"]) == 30
    assert summary["probe_focus"]["chosen_by"] == "auto" and summary["object_error"] <= 0.10
    assert isinstance(summary["verdict_ok"], bool) and summary["verdict_reason"] and "quality" in summary
    assert preview.read_bytes().startswith(b"\x89PNG")
    with h5py.File(out) as f:
        assert f.attrs["engine"] == "batched" and f["object"].dtype == np.complex64
        assert json.loads(f.attrs["parameters"])["device"] == "cpu"


def test_cli_a_diverged_run_writes_its_outputs_and_fails_the_verdict(tiny_path: Path, tmp_path: Path) -> None:
    summary_path = tmp_path / "s.json"
    done = _cli(
        tiny_path, tmp_path / "out.h5", "--iterations", "10", "--alpha", "30", "--device", "cpu",
        "--workers", "2", "--summary", summary_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # the job ran; the verdict tells the pipeline it failed
    assert done.stderr == ""  # no RuntimeWarning from the worker threads
    summary = outputs.read_summary(summary_path.read_text())
    assert summary["verdict_ok"] is False and "NOT OK" in done.stdout


def test_cli_exit_codes(tiny_path: Path, tmp_path: Path) -> None:
    bad = simulate.write_defect(tmp_path / NAME, "truncated")
    done = _cli(bad, tmp_path / "out.h5", "--device", "cpu", "--summary", tmp_path / "s.json")
    assert done.returncode == 2 and done.stderr.startswith("error: bad input: ")
    assert not (tmp_path / "s.json").exists()
    assert _cli(tiny_path, tmp_path / "out.h5", "--device", "tpu").returncode == 2
    assert _cli(tiny_path, tmp_path / "out.h5", "--batch-size", "0").returncode == 2


def test_cli_asked_for_a_missing_gpu_fails_in_one_line(tiny_path: Path, tmp_path: Path) -> None:
    try:
        backends.gpu_backend()
        pytest.skip("this machine has a usable GPU")
    except backends.BackendUnavailable:
        pass
    done = _cli(tiny_path, tmp_path / "out.h5", "--device", "gpu", "--iterations", "2")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: BackendUnavailable: ")
    assert not (tmp_path / "out.h5").exists()


SLURM = jobscript.SlurmDirectives(account="als", cpu_constraint="cpu", gpu_constraint="gpu")


def _script(params: BatchedParams, **kwargs: object) -> str:
    return jobscript.render_script(
        params,
        input_path="/d/scan.cxi",
        workdir="/w/scan1",
        job_name="reconstruction.s1.x",
        slurm=SLURM,
        setup="source /env/bin/activate",
        gpu_setup=NERSC_GPU_SETUP,
        **kwargs,
    )


def test_only_a_gpu_job_requests_the_gpu_and_loads_cuda() -> None:
    gpu = _script(BatchedParams())
    assert "#SBATCH --gpus=1" in gpu and "#SBATCH --constraint=gpu" in gpu
    lines = gpu.splitlines()
    command = next(i for i, line in enumerate(lines) if "-m cosmic_dagster.ptycho.batched" in line)
    assert lines[command - 2 : command] == ["source /env/bin/activate", NERSC_GPU_SETUP]
    assert "--device auto" in lines[command]

    cpu = _script(BatchedParams(device="cpu", batch_size=64))
    assert "--gpus" not in cpu and "#SBATCH --constraint=cpu" in cpu and "cudatoolkit" not in cpu
    assert f"#SBATCH --cpus-per-task={CPU_CORES}" in cpu and "--device cpu --batch-size 64" in cpu
    assert "cudatoolkit" not in _script(EpieParams())  # CPU engines keep a CPU job


def test_gpu_setup_is_a_site_setting(tmp_path: Path) -> None:
    nersc = Settings.from_env({"COSMIC_PROFILE": "nersc", "COSMIC_DATA_ROOT": str(tmp_path)})
    env = {"COSMIC_NERSC_RECON_ROOT": "/pscratch/recon", "COSMIC_TRANSFER": "local"}
    assert SiteSettings.from_env(nersc, env).gpu_setup == NERSC_GPU_SETUP
    custom = {**env, "COSMIC_GPU_JOB_SETUP": "module load cudatoolkit/12.4\nmodule load cudnn"}
    assert SiteSettings.from_env(nersc, custom).gpu_setup == custom["COSMIC_GPU_JOB_SETUP"]
    slurm = Settings.from_env({"COSMIC_PROFILE": "slurm", "COSMIC_DATA_ROOT": str(tmp_path)})
    assert SiteSettings.from_env(slurm, {}).gpu_setup == ""


def test_the_registry_and_run_config_reach_the_engine() -> None:
    assert "batched" in engines.engine_names()
    params = engines.params_from(
        "batched", {"device": "cpu", "iterations": 7, "batch_size": None, "force": True}
    )
    assert params == BatchedParams(device="cpu", iterations=7)
    config = ReconstructionConfig(engine="batched", device="gpu", batch_size=32, iterations=40)
    assert config.params() == BatchedParams(device="gpu", batch_size=32, iterations=40)
    assert ReconstructionConfig().params() == engines.params_from(engines.DEFAULT_ENGINE, {})  # CPU default
    args = build_parser().parse_args(
        ["recon", "--engine", "batched", "--device", "cpu", "NS_230216033_ccdframes_0_0"]
    )
    assert _recon_config(args)["ops"]["scan_pipeline"]["config"] == {"engine": "batched", "device": "cpu"}
    with pytest.raises(jobscript.JobScriptError, match="device"):
        BatchedParams(device="tpu")
    with pytest.raises(jobscript.JobScriptError, match="batch_size"):
        BatchedParams(batch_size=0)


def test_the_job_script_runs_where_there_is_no_module_command(tiny_path: Path, tmp_path: Path) -> None:
    """``auto`` on a machine without GPU: the guarded setup line is a no-op and the run uses the CPU."""
    workdir = tmp_path / "job"
    params = BatchedParams(iterations=10, probe_defocus_um=NOMINAL * 1e6)
    script = jobscript.render_script(
        params,
        input_path=str(tiny_path),
        workdir=str(workdir),
        job_name="r.s.x",
        slurm=None,
        python=sys.executable,
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = outputs.read_summary((workdir / outputs.SUMMARY).read_text())
    assert summary["engine"] == "batched" and summary["probe_focus"]["chosen_by"] == "operator"
    assert (workdir / outputs.RECONSTRUCTION).exists() and (workdir / outputs.PREVIEW).exists()


def test_asset_metadata_shows_the_device_and_gpu_memory(tmp_path: Path) -> None:
    compute = LocalComputeResource(recon_root=str(tmp_path), jobs_dir=str(tmp_path / "jobs"))

    def metadata(summary: dict) -> dict:
        result = Reconstruction(
            "k", "batched", {}, JobOutcome("1", "COMPLETED"), "/w", "/w/r.h5", summary, None
        )
        return _recon_metadata(result, compute)

    gpu = metadata({"device": "gpu", "peak_gpu_memory_bytes": 3 * 2**30})
    assert gpu["device"] == "gpu" and gpu["peak_gpu_memory_mib"] == 3072.0
    assert "device" not in metadata({})  # engines that do not report one (ptychocam, cdtools)
