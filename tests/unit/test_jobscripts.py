"""Job scripts are rendered exactly, validated strictly and named deterministically."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import sys

import pytest

from cosmic_dagster.compute.jobscript import (
    DEFAULT_PTYCHOCAM_WRAPPER,
    CdtoolsParams,
    EpieParams,
    JobScriptError,
    PtychocamParams,
    SlurmDirectives,
    job_name,
    params_digest,
    render_script,
)
from cosmic_dagster.ptycho import epie

CXI = "/global/cfs/cdirs/als/gsharing/data_mover/7012/2023/02/230216/NS_230216033_ccdframes_0_0.cxi"
WORKDIR = "/pscratch/sd/a/alsdata/cosmic/NS_230216033_ccdframes_0_0"
NERSC = SlurmDirectives(account="als_g", qos="regular", cpu_constraint="cpu", gpu_constraint="gpu")
NERSC_HEADER = f"""#!/bin/bash
#SBATCH --job-name=recon.k.0000
#SBATCH --output={WORKDIR}/job.out
#SBATCH --error={WORKDIR}/job.out
#SBATCH --nodes=1
#SBATCH --time=04:00:00
#SBATCH --account=als_g
#SBATCH --qos=regular
#SBATCH --constraint=gpu
#SBATCH --gpus=4
#SBATCH --cpus-per-task=64
"""
BODY = f"""set -euo pipefail
mkdir -p {WORKDIR}
cd {WORKDIR}
"""


def render(params, slurm=NERSC, **kw):
    return render_script(params, input_path=CXI, workdir=WORKDIR, job_name="recon.k.0000", slurm=slurm, **kw)


@pytest.mark.parametrize(
    ("params", "flags"),
    [
        (PtychocamParams(), "-i 500"),
        # Non-zero refine periods: the combination that crashed the old flow with a KeyError.
        (PtychocamParams(illumination_refine_period=1, background_refine_period=1), "-i 500 -r 1 -T 1"),
        (
            PtychocamParams(
                iterations=2000,
                illumination_refine_period=5,
                background_refine_period=10,
                enforce_illumination_mask=True,
            ),
            "-i 2000 -r 5 -T 10 -M",
        ),
        (PtychocamParams(background_refine_period=3), "-i 500 -T 3"),
    ],
)
def test_ptychocam_script(params, flags):
    expected = (
        NERSC_HEADER
        + "# ptychocam reconstruction recon.k.0000\n"
        + BODY
        + f"{DEFAULT_PTYCHOCAM_WRAPPER} {flags} {CXI}\n"
    )
    assert render(params) == expected


@pytest.mark.parametrize(
    ("params", "values"),
    [
        (CdtoolsParams(), "False 1 1 5e-05 True 1 50 50 0 None False None"),
        (
            CdtoolsParams(
                run_split_reconstructions=True,
                n_modes=3,
                oversampling_factor=2,
                propagation_distance=1.5e-5,
                simulate_probe_translation=False,
                n_init_rounds=2,
                n_init_iter=20,
                n_final_iter=100,
                translation_randomization=0.5,
                probe_initialization="/data/probe guess.h5",
                init_background=True,
                probe_support_radius=120.0,
                wrapper="/opt/cdtools/run.sh",
            ),
            "True 3 2 1.5e-05 False 2 20 100 0.5 '/data/probe guess.h5' True 120.0",
        ),
    ],
)
def test_cdtools_script(params, values):
    expected = (
        "#!/bin/bash\n# cdtools reconstruction recon.k.0000\n" + BODY + f"{params.wrapper} {CXI} {values}\n"
    )
    assert render(params, slurm=None) == expected


def test_epie_script_with_setup_and_optional_directives():
    slurm = SlurmDirectives(qos="debug", time_limit="00:20:00", partition="debug", mem="4G")
    script = render_script(
        EpieParams(iterations=20, probe_refine_start=2, seed=7),
        input_path="/data/scan 1.cxi",
        workdir="/work/out dir",
        job_name="recon.k.0000",
        slurm=slurm,
        python="/opt/venv/bin/python",
        setup="module load python\nsource /opt/env.sh\n",
    )
    assert script == (
        "#!/bin/bash\n"
        "#SBATCH --job-name=recon.k.0000\n"
        "#SBATCH --output='/work/out dir/job.out'\n"
        "#SBATCH --error='/work/out dir/job.out'\n"
        "#SBATCH --nodes=1\n"
        "#SBATCH --time=00:20:00\n"
        "#SBATCH --qos=debug\n"
        "#SBATCH --partition=debug\n"
        "#SBATCH --cpus-per-task=1\n"
        "#SBATCH --mem=4G\n"
        "# epie reconstruction recon.k.0000\n"
        "set -euo pipefail\n"
        "mkdir -p '/work/out dir'\n"
        "cd '/work/out dir'\n"
        "module load python\n"
        "source /opt/env.sh\n"
        "/opt/venv/bin/python -m cosmic_dagster.ptycho.epie '/data/scan 1.cxi'"
        " '/work/out dir/reconstruction.h5'"
        " --iterations 20 --probe-refine-start 2 --seed 7 --summary '/work/out dir/summary.json'"
        " --preview '/work/out dir/preview.png'\n"
    )


def test_rendered_script_is_valid_bash_and_runs_locally(tmp_path):
    """Without directives the script is a plain local job: it creates its workdir and runs there."""
    workdir = tmp_path / "a dir" / "job"
    script = render_script(
        EpieParams(),
        input_path=str(tmp_path / "in.cxi"),
        workdir=str(workdir),
        job_name="recon.k.0000",
        slurm=None,
        python="echo",
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.startswith(
        f"-m cosmic_dagster.ptycho.epie {tmp_path}/in.cxi {workdir}/reconstruction.h5"
    )
    assert workdir.is_dir()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: EpieParams(iterations=0), "iterations must be >= 1"),
        (lambda: EpieParams(iterations=-5), "iterations must be >= 1"),
        (lambda: EpieParams(iterations=10.0), "must be an integer"),
        (lambda: EpieParams(iterations=True), "must be an integer"),
        (lambda: EpieParams(probe_refine_start=-1), "probe_refine_start must be >= 0"),
        (lambda: PtychocamParams(iterations=0), "iterations must be >= 1"),
        (lambda: PtychocamParams(illumination_refine_period=-1), "illumination_refine_period"),
        (lambda: PtychocamParams(enforce_illumination_mask=1), "True or False"),
        (lambda: PtychocamParams(wrapper="/opt/x\nrm -rf /"), "newlines or quotes"),
        (lambda: CdtoolsParams(n_final_iter=0), "n_final_iter must be >= 1"),
        (lambda: CdtoolsParams(propagation_distance=float("nan")), "finite number"),
        (lambda: CdtoolsParams(probe_initialization="it's.h5"), "newlines or quotes"),
        (lambda: EpieParams(probe_defocus_um=float("inf")), "probe_defocus_um must be a finite number"),
        (lambda: EpieParams(average_iterations=-1), "average_iterations must be >= 0"),
        (lambda: EpieParams(likelihood_iterations=-1), "likelihood_iterations must be >= 0"),
        (lambda: SlurmDirectives("als_g", "fast"), "unknown QoS 'fast'"),
        (lambda: SlurmDirectives("als g", "regular"), "account must be"),
        (lambda: SlurmDirectives(gpu_constraint="gpu;x"), "gpu_constraint is not a feature"),
        (lambda: SlurmDirectives(cpu_constraint="cpu x"), "cpu_constraint is not a feature"),
        (lambda: SlurmDirectives(time_limit="4h"), "HH:MM:SS"),
        (lambda: SlurmDirectives(time_limit="01:60:00"), "HH:MM:SS"),
        (lambda: SlurmDirectives(time_limit="00:00:00"), "non-zero"),
        (lambda: SlurmDirectives(nodes=0), "nodes must be >= 1"),
        (lambda: SlurmDirectives(mem="4 GB"), "mem must look like"),
    ],
)
def test_bad_parameters_are_rejected_clearly(make, message):
    with pytest.raises(JobScriptError, match=re.escape(message)):
        make()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"job_name": "recon 2023-02-16 10:00:00"}, "job_name must be"),
        ({"job_name": ""}, "job_name must be"),
        ({"workdir": "/scratch/it's"}, "workdir must not contain newlines or quotes"),
        ({"workdir": "/scratch/a\nb"}, "workdir must not contain newlines or quotes"),
        ({"input_path": '/data/"x".cxi'}, "input_path must not contain newlines or quotes"),
        ({"input_path": ""}, "input_path must be a non-empty path"),
    ],
)
def test_bad_names_and_paths_are_rejected(kw, message):
    args = {"input_path": CXI, "workdir": WORKDIR, "job_name": "recon.k.0000", **kw}
    with pytest.raises(JobScriptError, match=re.escape(message)):
        render_script(EpieParams(), slurm=NERSC, **args)


def _directives(script: str) -> dict[str, str]:
    return dict(line[len("#SBATCH --") :].split("=", 1) for line in script.splitlines() if "#SBATCH" in line)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # Our engine: one core on a CPU node, no GPU (it used to ask for a GPU node).
        (EpieParams(), {"constraint": "cpu", "cpus-per-task": "1", "time": "00:30:00"}),
        (
            PtychocamParams(gpus=2),
            {"constraint": "gpu", "gpus": "2", "cpus-per-task": "32", "time": "04:00:00"},
        ),
        (CdtoolsParams(), {"constraint": "gpu", "gpus": "1", "cpus-per-task": "16", "time": "04:00:00"}),
    ],
)
def test_jobs_request_what_their_engine_uses(params, expected):
    directives = _directives(render(params))
    assert {k: directives.get(k) for k in expected} == expected
    if params.resources().gpus == 0:
        assert "gpus" not in directives


def test_site_time_limit_overrides_the_engine_s():
    slurm = SlurmDirectives(time_limit="00:05:00")
    assert _directives(render(PtychocamParams(), slurm=slurm))["time"] == "00:05:00"


def test_a_parameter_added_later_keeps_existing_job_names():
    """probe_defocus_um, average_iterations and likelihood_iterations joined EpieParams later: unset,
    the digest is what it always was."""
    legacy = {"engine": "epie", "iterations": 100, "probe_refine_start": 5, "seed": 0}
    digest = hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()[:8]
    assert params_digest(EpieParams()) == digest
    assert params_digest(EpieParams(probe_defocus_um=-12.0)) != digest
    assert params_digest(EpieParams(average_iterations=0)) != digest
    assert params_digest(EpieParams(likelihood_iterations=0)) != digest


@pytest.mark.parametrize(("average_iterations", "likelihood_iterations"), [(None, None), (0, 0), (7, 40)])
def test_epie_command_is_what_the_engine_parses(average_iterations, likelihood_iterations):
    """The job's command line means to the engine what the run config said (its parser, not a
    copy of it, reads the words)."""
    params = EpieParams(
        iterations=30,
        probe_defocus_um=-12.5,
        average_iterations=average_iterations,
        likelihood_iterations=likelihood_iterations,
    )
    words = shlex.split(params.command(input_path=CXI, workdir=WORKDIR, python="python"))
    assert words[:3] == ["python", "-m", "cosmic_dagster.ptycho.epie"]
    args = epie._epie_parser().parse_args(words[3:])
    expected = (
        epie.DEFAULT_AVERAGE_ITERATIONS if average_iterations is None else average_iterations,
        epie.DEFAULT_LIKELIHOOD_ITERATIONS if likelihood_iterations is None else likelihood_iterations,
    )
    assert (args.iterations, args.probe_defocus_um) == (30, -12.5)
    assert (args.average_iterations, args.likelihood_iterations) == expected


def test_job_name_is_deterministic_and_safe():
    key = "NS_230216033_ccdframes_0_0"
    name = job_name("reconstruction", key, PtychocamParams(illumination_refine_period=1))
    assert name == job_name("reconstruction", key, PtychocamParams(illumination_refine_period=1))
    assert re.fullmatch(r"reconstruction\.NS_230216033_ccdframes_0_0\.[0-9a-f]{8}", name)
    # Any parameter, the engine and the scan key change the name.
    others = {
        job_name("reconstruction", key, PtychocamParams(illumination_refine_period=2)),
        job_name("reconstruction", key, PtychocamParams()),
        job_name("reconstruction", key, EpieParams()),
        job_name("reconstruction", key, CdtoolsParams()),
        job_name(
            "reconstruction", "NS_230216034_ccdframes_0_0", PtychocamParams(illumination_refine_period=1)
        ),
    }
    assert name not in others and len(others) == 5


def test_job_name_differs_between_deployments_writing_elsewhere():
    params, key = EpieParams(), "NS_230216033_ccdframes_0_0"
    here = job_name("recon", key, params, workdir="/a/recon/x")
    assert here == job_name("recon", key, params, workdir="/a/recon/x")
    assert here != job_name("recon", key, params, workdir="/b/recon/x") != job_name("recon", key, params)


def test_params_digest_is_stable_across_processes():
    """The digest must not depend on hash randomisation: a rerun in a new process finds its job."""
    code = (
        "from cosmic_dagster.compute.jobscript import EpieParams, params_digest;"
        "print(params_digest(EpieParams(iterations=7)))"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert digests == {params_digest(EpieParams(iterations=7))}


@pytest.mark.parametrize(
    ("asset", "key"), [("recon/x", "k"), ("recon", "2023/02/scan.cxi"), ("recon", "a,b")]
)
def test_job_name_rejects_unsafe_parts(asset, key):
    with pytest.raises(JobScriptError, match=re.escape("only A-Z a-z 0-9 _ . -")):
        job_name(asset, key, EpieParams())
