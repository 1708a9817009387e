"""Local ePIE engine speed on one core, against the FFT-only lower bound and a straightforward numpy ePIE.

    .venv/bin/python benchmarks/engine.py [--repeats 3]

Figures: wall time of 100 iterations on 64 frames of 128² with auto-focus off (target <= 3 s), with
the averaging sweeps a pipeline runs after them (``epie.DEFAULT_AVERAGE_ITERATIONS``) and without;
the likelihood finish a pipeline runs last (``epie.DEFAULT_LIKELIHOOD_ITERATIONS``), apart; the
time of the same FFTs alone (the floor any FFT-based ePIE pays); frames·iterations
per second on 256² frames; the object error of the timed run; and, separately, what the probe
auto-focus costs on the same scan (seconds and as a fraction of one plain run; target <= 1). Last line:
``RESULT engine_64x128_100it_s=... fft_only_s=... object_error=... auto_focus_s=... (more keys)``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import fft

from cosmic_dagster.ptycho import cxi, epie, optics, quality, simulate


def pin_to_one_core() -> int:
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def fft_only_seconds(n_frames: int, size: int, iterations: int, backend: str) -> float:
    """The engine's FFT calls alone: one forward and one inverse 2-D transform per frame and iteration."""
    rng = np.random.default_rng(0)
    wave = (rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))).astype(np.complex64)
    start = time.perf_counter()
    for _ in range(iterations * n_frames):
        if backend == "scipy":
            fft.ifft2(fft.fft2(wave, workers=1), workers=1, overwrite_x=True)
        else:
            np.fft.ifft2(np.fft.fft2(wave))
    return time.perf_counter() - start


def straightforward_epie_seconds(scan: cxi.ScanData, iterations: int) -> float:
    """A textbook numpy ePIE (the 4.9 s reference): centred transforms, a new array per operation."""
    h, w = scan.frames.shape[1:]
    amplitude = np.sqrt(scan.frames)
    positions = np.rint(scan.positions_px).astype(int)
    probe = epie.initial_probe(scan, epie.nominal_defocus_m(scan))
    obj = np.ones(scan.object_shape, np.complex64)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for iteration in range(iterations):
        for k in rng.permutation(len(positions)):
            y, x = positions[k]
            patch = obj[y : y + h, x : x + w].copy()
            psi = probe * patch
            spectrum = optics.centred_fft2(psi)
            spectrum = amplitude[k] * np.exp(1j * np.angle(spectrum))
            delta = (optics.centred_ifft2(spectrum) - psi).astype(np.complex64)
            obj[y : y + h, x : x + w] += np.conj(probe) * delta / np.max(np.abs(probe) ** 2)
            if iteration >= epie.DEFAULT_PROBE_REFINE_START:
                probe += np.conj(patch) * delta / np.max(np.abs(patch) ** 2)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    core = pin_to_one_core()
    print(f"pinned to core {core}; OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        demo_spec = simulate.SimulationSpec.demo()
        demo = cxi.load_scan(simulate.write_scan(Path(tmp) / "demo.cxi", demo_spec))
        big_spec = replace(demo_spec, frame_size=256, detector_pixel_m=30e-6)
        big = cxi.load_scan(simulate.write_scan(Path(tmp) / "big.cxi", big_spec))

    nominal = epie.nominal_defocus_m(demo)  # auto-focus off: the defocus is given
    runs = [
        epie.reconstruct(demo, 100, probe_defocus_m=nominal, likelihood_iterations=0)
        for _ in range(args.repeats)
    ]
    engine_s = statistics.median(r.seconds for r in runs)
    finished = [epie.reconstruct(demo, 100, probe_defocus_m=nominal) for _ in range(args.repeats)]
    finished_s = statistics.median(r.seconds for r in finished)
    epie_s = statistics.median(
        epie.reconstruct(
            demo, 100, probe_defocus_m=nominal, average_iterations=0, likelihood_iterations=0
        ).seconds
        for _ in range(args.repeats)
    )
    assert demo.ground_truth is not None
    error, finished_error = (
        quality.object_error(r[0].object, demo.ground_truth, illumination=r[0].illumination)
        for r in (runs, finished)
    )
    fft_s = statistics.median(fft_only_seconds(64, 128, 100, "scipy") for _ in range(args.repeats))
    numpy_fft_s = statistics.median(fft_only_seconds(64, 128, 100, "numpy") for _ in range(args.repeats))
    plain_s = straightforward_epie_seconds(demo, 100)
    drop = runs[0].fourier_error[0] / runs[0].fourier_error[-1]

    big_iterations = 20
    big_s = statistics.median(
        epie.reconstruct(
            big, big_iterations, probe_defocus_m=nominal, average_iterations=0, likelihood_iterations=0
        ).seconds
        for _ in range(args.repeats)
    )
    focused = [epie.reconstruct(demo, 100) for _ in range(args.repeats)]
    focus_s = statistics.median(r.focus.seconds for r in focused if r.focus is not None)
    assert focused[0].focus is not None
    focus_error = quality.object_error(
        focused[0].object, demo.ground_truth, illumination=focused[0].illumination
    )
    big_fft_s = statistics.median(
        fft_only_seconds(64, 256, big_iterations, "scipy") for _ in range(args.repeats)
    )
    rate_256 = 64 * big_iterations / big_s

    print(f"{'64 frames of 128², 100 iterations, 1 core':<48} median of {args.repeats}")
    averaged = f"+ {epie.DEFAULT_AVERAGE_ITERATIONS} averaging sweeps"
    print(f"  {'this engine, ' + averaged:<44} {engine_s:7.3f} s  (target <= 3 s)")
    print(f"  {'this engine, ePIE alone (scipy.fft, in place)':<44} {epie_s:7.3f} s")
    print(f"  {'FFTs alone, scipy.fft (lower bound)':<44} {fft_s:7.3f} s  ePIE/FFT = {epie_s / fft_s:.2f}")
    print(f"  {'FFTs alone, numpy.fft':<44} {numpy_fft_s:7.3f} s")
    print(
        f"  {'straightforward numpy ePIE (1 run)':<44} {plain_s:7.3f} s  speed-up = {plain_s / epie_s:.2f}x"
    )
    print(f"  object error {error:.4f} (registered, lit region), Fourier error drop {drop:.1f}x")
    finish = f"+ the likelihood finish ({epie.DEFAULT_LIKELIHOOD_ITERATIONS} iterations at most)"
    print(
        f"  {'this engine, ' + averaged + ' ' + finish:<44} {finished_s:7.3f} s  the finish "
        f"{finished_s - engine_s:.3f} s; object error {finished_error:.4f}"
    )
    print(f"{'probe auto-focus on the same scan':<48}")
    print(
        f"  {'auto-focus (trials on a patch)':<44} {focus_s:7.3f} s  = {focus_s / engine_s:.2f}x "
        f"one plain run (target <= 1); chose {focused[0].focus.defocus_m * 1e6:+.1f} µm, "
        f"object error {focus_error:.4f}"
    )
    print(f"{'64 frames of 256², 20 iterations':<48}")
    print(f"  {'this engine':<44} {big_s:7.3f} s  = {rate_256:.0f} frames·iterations/s")
    print(f"  {'FFTs alone':<44} {big_fft_s:7.3f} s  engine/FFT = {big_s / big_fft_s:.2f}")
    print(
        f"RESULT engine_64x128_100it_s={engine_s:.3f} epie_only_s={epie_s:.3f} fft_only_s={fft_s:.3f} "
        f"object_error={error:.4f} epie_to_fft={epie_s / fft_s:.2f} straightforward_s={plain_s:.3f} "
        f"frames_iterations_per_s_256={rate_256:.0f} engine_to_fft_256={big_s / big_fft_s:.2f} "
        f"auto_focus_s={focus_s:.3f} auto_focus_to_run={focus_s / engine_s:.2f} "
        f"finished_s={finished_s:.3f} finish_s={finished_s - engine_s:.3f} "
        f"finished_object_error={finished_error:.4f}"
    )


if __name__ == "__main__":
    main()
