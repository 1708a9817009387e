"""The local ePIE engine: acceptance round trip, the probe-defocus pitfall, divergence, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from cosmic_dagster.ptycho import cxi, epie, layout, optics, quality, simulate, verdict
from cosmic_dagster.ptycho import focus as ptycho_focus
from cosmic_dagster.ptycho.simulate import SimulationSpec

NAME = "NS_230216033_ccdframes_0_0.cxi"


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate.write_scan(tmp_path_factory.mktemp("tiny") / NAME, SimulationSpec.tiny())


@pytest.fixture(scope="module")
def tiny(tiny_path: Path) -> cxi.ScanData:
    return cxi.load_scan(tiny_path)


def _object_error(recon: epie.Reconstruction, scan: cxi.ScanData) -> float:
    assert scan.ground_truth is not None
    return quality.object_error(recon.object, scan.ground_truth, illumination=recon.illumination)


def _judged(recon: epie.Reconstruction, scan: cxi.ScanData) -> verdict.Verdict:
    return quality.assess(
        scan, recon.object, recon.probe, recon.positions_px, recon.fourier_error, recon.illumination
    ).verdict


NOMINAL = optics.cosmic_probe_defocus_m(800.0)


@pytest.mark.parametrize(
    "changes",
    [
        {},  # cdtools' convention (the default), focus on the usual side
        {"defocus_m": -NOMINAL},  # the sample on the other side of the focus
        {"fft_sign": -1},  # a writer with the other FFT sign (mirrored patterns)
        {"defocus_m": -25e-6, "fft_sign": -1, "sample": "cells"},
    ],
)
def test_both_defocus_signs_reconstruct_with_default_settings(tmp_path: Path, changes: dict) -> None:
    scan = cxi.load_scan(simulate.write_scan(tmp_path / NAME, replace(SimulationSpec.tiny(), **changes)))
    recon = epie.reconstruct(scan)  # defaults: auto-focus, 100 iterations
    assert recon.focus is not None and recon.focus.chosen_by == "auto"
    spec = replace(SimulationSpec.tiny(), **changes)
    assert np.sign(recon.focus.defocus_m) == np.sign(spec.resolved_defocus_m * spec.fft_sign)
    assert _object_error(recon, scan) <= 0.15
    judged = _judged(recon, scan)
    assert judged.ok, judged.reason


def test_a_wrong_fixed_defocus_fails_the_verdict_with_a_reason(tiny: cxi.ScanData) -> None:
    recon = epie.reconstruct(tiny, probe_defocus_m=-NOMINAL)
    assert recon.focus is not None and recon.focus.chosen_by == "operator"
    assert _object_error(recon, tiny) > 0.2
    judged = _judged(recon, tiny)
    assert not judged.ok and judged.signal and "wrong probe defocus" in judged.reason


def test_pure_noise_and_a_diverged_reconstruction_fail_the_verdict(tiny: cxi.ScanData) -> None:
    good = epie.reconstruct(tiny, 20, probe_defocus_m=NOMINAL)
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(good.object.shape) + 1j * rng.standard_normal(good.object.shape)).astype(
        np.complex64
    )
    noisy = quality.assess(tiny, noise, good.probe, good.positions_px, good.fourier_error, good.illumination)
    assert not noisy.verdict.ok and noisy.verdict.signal == "error_to_noise_floor"
    diverged = epie.reconstruct(tiny, 20, alpha=30.0, probe_defocus_m=NOMINAL)
    judged = _judged(diverged, tiny)
    assert not judged.ok and judged.signal in ("divergence", "finite") and judged.reason


def test_round_trip_on_the_demo_size_meets_the_acceptance(tmp_path: Path) -> None:
    scan = cxi.load_scan(simulate.write_scan(tmp_path / NAME, SimulationSpec.demo()))
    recon = epie.reconstruct(scan)  # default iterations
    assert len(recon.fourier_error) == epie.DEFAULT_ITERATIONS + epie.DEFAULT_AVERAGE_ITERATIONS + 1  # finish
    assert recon.object.dtype == recon.probe.dtype == np.complex64
    assert recon.fourier_error[0] / recon.fourier_error[-1] >= 5
    assert _object_error(recon, scan) <= 0.10
    assert _judged(recon, scan).ok


def test_tiny_scan_converges_in_twenty_iterations(tiny: cxi.ScanData) -> None:
    recon = epie.reconstruct(tiny, 20)
    assert recon.fourier_error[0] / recon.fourier_error[-1] >= 3
    assert _object_error(recon, tiny) <= 0.10
    assert recon.params["iterations"] == 20 and recon.seconds > 0


def test_stored_probe_guess_must_be_defocused(tiny: cxi.ScanData) -> None:
    """COSMIC's probe guess is focused; used as is, ePIE fails (the reference pitfall)."""
    defocused = epie.reconstruct(tiny, 20, probe_defocus_m=epie.nominal_defocus_m(tiny))
    as_stored = epie.reconstruct(tiny, 20, probe_defocus_m=0.0)
    assert defocused.params["probe_defocus_m"] == pytest.approx(15e-6 * 800 / 700)
    assert _object_error(defocused, tiny) < 0.1 < 0.2 < _object_error(as_stored, tiny)


def test_without_a_stored_guess_the_probe_comes_from_the_mean_pattern(
    tiny_path: Path, tmp_path: Path
) -> None:
    path = tmp_path / NAME
    path.write_bytes(tiny_path.read_bytes())
    with h5py.File(path, "r+") as f:
        for name in layout.PROBE_GUESS_PATHS:
            del f[name]
    scan = cxi.load_scan(path)
    assert scan.probe_guess is None
    assert _object_error(epie.reconstruct(scan, 20), scan) <= 0.10


def test_absurd_step_size_diverges_and_is_flagged(tiny: cxi.ScanData) -> None:
    recon = epie.reconstruct(tiny, 20, alpha=30.0, probe_defocus_m=NOMINAL)
    judged = verdict.judge(verdict.Signals(recon.fourier_error, finite=True))
    assert not judged.ok and "diverged" in judged.reason
    assert len(recon.fourier_error) < 20  # stopped once the error was no longer finite


def test_masked_detector_pixels_are_left_unconstrained(tiny_path: Path, tmp_path: Path) -> None:
    path = tmp_path / NAME
    path.write_bytes(tiny_path.read_bytes())
    with h5py.File(path, "r+") as f:
        frames = f[layout.FRAMES]
        hot = frames[()]
        hot[:, 20:26, 40:46] = 5e4  # a block of hot pixels in every frame
        frames[...] = hot
    unmasked = cxi.load_scan(path)
    with h5py.File(path, "r+") as f:
        f[layout.MASK][20:26, 40:46] = 1
    masked = cxi.load_scan(path)
    assert masked.bad_pixels is not None and masked.bad_pixels.sum() == 36
    assert _object_error(epie.reconstruct(masked, 20), masked) <= 0.10
    assert _object_error(epie.reconstruct(unmasked, 20), unmasked) > 0.15


def test_same_seed_same_result(tiny: cxi.ScanData) -> None:
    a, b = epie.reconstruct(tiny, 5, seed=1), epie.reconstruct(tiny, 5, seed=1)
    c = epie.reconstruct(tiny, 5, seed=2)
    np.testing.assert_array_equal(a.object, b.object)
    assert not np.array_equal(a.object, c.object)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iterations": 0}, "iterations"),
        ({"alpha": 0}, "alpha"),
        ({"average_iterations": -1}, "average"),
        ({"likelihood_iterations": -1}, "likelihood"),
    ],
)
def test_reconstruct_rejects_bad_parameters(tiny: cxi.ScanData, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        epie.reconstruct(tiny, **{"iterations": 5, **kwargs})


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cosmic_dagster.ptycho.epie", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_cli_writes_output_summary_and_preview(tiny_path: Path, tmp_path: Path) -> None:
    out, summary_path, preview = (
        tmp_path / "r" / "out.h5",
        tmp_path / "summary.json",
        tmp_path / "preview.png",
    )
    done = _cli(
        tiny_path, out, "--iterations", "50", "--average-iterations", "10",
        "--likelihood-iterations", "20", "--summary", summary_path, "--preview", preview, "--seed", "3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "50 iterations + 10 averaging the object + a likelihood finish of 20" in done.stdout
    progress = [line for line in done.stdout.splitlines() if " iteration " in line]
    assert len(progress) == 11 and progress[-1].startswith("epie: iteration 61/61 fourier_error ")
    assert "verdict ok" in done.stdout.splitlines()[-1]

    summary = json.loads(summary_path.read_text())
    assert summary["engine"] == "epie" and summary["iterations"] == 61 and len(summary["fourier_error"]) == 61
    assert summary["parameters"]["average_iterations"] == 10
    assert summary["parameters"]["likelihood_iterations"] == 20
    assert summary["fourier_error_first"] == summary["fourier_error"][0]
    assert summary["fourier_error_final"] == summary["fourier_error"][-1]
    assert summary["fourier_error_drop"] == pytest.approx(
        summary["fourier_error_first"] / summary["fourier_error_final"]
    )
    assert summary["finite"] is True and summary["verdict_ok"] is True and summary["verdict_reason"]
    assert isinstance(summary["seconds"], float) and 0 <= summary["object_error"] <= 0.10
    assert summary["output"] == str(out) and summary["preview"] == str(preview)
    assert summary["parameters"]["seed"] == 3
    focus = summary["probe_focus"]
    assert focus["chosen_by"] == "auto" and NOMINAL / 1.5 < focus["probe_defocus_um"] * 1e-6 < NOMINAL * 1.5
    assert "held-out frames best" in focus["reason"] and focus["seconds"] > 0
    assert (
        ptycho_focus.LADDER_TRIALS <= len(focus["trials_um"]) <= ptycho_focus.TRIALS
        and "parallax_um" in focus
    )
    assert summary["parameters"]["probe_defocus_m"] == pytest.approx(focus["probe_defocus_um"] * 1e-6)
    assert 0.5 < summary["quality"]["error_to_noise_floor"] < 3 and summary["verdict_signal"] == ""
    assert f"probe defocus {focus['probe_defocus_um']:+.1f} µm" in done.stdout

    with h5py.File(out, "r") as f:
        assert f["object"].dtype == np.complex64 and f["probe"].shape == (64, 64)
        np.testing.assert_array_equal(f["fourier_error"][()], summary["fourier_error"])
        assert f.attrs["engine"] == "epie" and json.loads(f.attrs["parameters"])["iterations"] == 50
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.rglob("*.tmp"))


def test_cli_diverged_run_still_writes_strict_json(tiny_path: Path, tmp_path: Path) -> None:
    summary_path = tmp_path / "s.json"
    done = _cli(
        tiny_path,
        tmp_path / "out.h5",
        *("--iterations", "10", "--alpha", "30", "--summary", summary_path),
        *("--probe-defocus-um", str(NOMINAL * 1e6)),
    )
    assert done.returncode == 0, done.stderr  # the job ran; the verdict tells the pipeline it failed
    assert "verdict NOT OK: diverged" in done.stdout

    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    summary = json.loads(summary_path.read_text(), parse_constant=reject)
    assert summary["verdict_ok"] is False and summary["verdict_reason"].startswith("diverged")
    assert summary["fourier_error"][-1] is None and summary["fourier_error_final"] is None


def test_cli_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    bad = simulate.write_defect(tmp_path / NAME, "truncated")
    done = _cli(bad, tmp_path / "out.h5", "--iterations", "5", "--summary", tmp_path / "s.json")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: bad input: {NAME}: HDF5 file is truncated")
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "s.json").exists()


def test_cli_rejects_bad_arguments(tiny_path: Path, tmp_path: Path) -> None:
    done = _cli(tiny_path, tmp_path / "out.h5", "--iterations", "0")
    assert done.returncode == 2 and "--iterations: must be >= 1" in done.stderr


def test_engine_module_does_not_import_dagster() -> None:
    code = "import sys, cosmic_dagster.ptycho.epie; print(sorted({m.split('.')[0] for m in sys.modules}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "'dagster'" not in done.stdout and "'numpy'" in done.stdout
