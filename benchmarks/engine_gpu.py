"""The mini-batch engine against today's ePIE on one scan: CPU engine on one core, batched engine on all
cores, and, where CuPy sees a GPU, the batched engine on it with the device's FFT bound.

    .venv/bin/python benchmarks/engine_gpu.py [--scan realistic|medium|demo] [--iterations 100]

Default scan: ``realistic`` (2,500 x 256²) where a GPU is present, ``medium`` (144 x 256²) otherwise
(today's engine needs about 6 min for 100 iterations of the realistic scan on one core). The probe
defocus is fixed at COSMIC's nominal value for every run, so only the engines differ. "Per core"
figures divide by the cores a run used; the CPU-time figures (frames·it per CPU second) are what a
shared machine measures most reliably. Last line: ``RESULT frames_it_per_s_cpu1=...
frames_it_per_s_batched_cpu=... frames_it_per_s_gpu=... fft_bound_frames_per_s=... object_error=...``
(GPU figures ``n/a`` without a GPU; ``object_error`` is the batched engine's, on the GPU if used).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cosmic_dagster.ptycho import batched, cxi, epie, optics, quality, simulate
from cosmic_dagster.ptycho import xp as backends
from cosmic_dagster.ptycho.simulate import SimulationSpec

SCANS: dict[str, Callable[[], SimulationSpec]] = {
    "realistic": SimulationSpec.realistic,
    "medium": lambda: SimulationSpec(n_side=12, frame_size=256, detector_pixel_m=30e-6),
    "demo": SimulationSpec.demo,
}


def timed(run: Callable[[], epie.Reconstruction]) -> tuple[epie.Reconstruction, float, float]:
    """The result, its engine seconds, and the CPU seconds the process spent meanwhile."""
    cpu = time.process_time()
    recon = run()
    return recon, recon.seconds, time.process_time() - cpu


def fft_bound_frames_per_s(backend: backends.Backend, n_frames: int, size: int, batch: int) -> float:
    """Frames per second of one forward and one inverse transform per frame, batch by batch, on the device."""
    rng = np.random.default_rng(0)
    host = (rng.standard_normal((batch, size, size)) + 1j * rng.standard_normal((batch, size, size))).astype(
        np.complex64
    )
    waves = backend.to_device(host)
    backend.ifft2(backend.fft2(waves))  # plans; a forward and inverse pair leaves the data as it was
    backend.synchronize()
    start = time.perf_counter()
    done = 0
    while done < n_frames:
        backend.ifft2(backend.fft2(waves))
        done += batch
    backend.synchronize()
    return done / (time.perf_counter() - start)


def gpu_or_none() -> backends.Backend | None:
    try:
        return backends.gpu_backend()
    except backends.BackendUnavailable as exc:
        print(f"no GPU: {exc}")
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", choices=sorted(SCANS), default=None)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument(
        "--cpu-iterations",
        type=int,
        default=None,
        help="for the CPU runs (default: --iterations; 10 with a GPU)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per engine (median)")
    args = parser.parse_args()
    gpu = gpu_or_none()
    name = args.scan or ("realistic" if gpu is not None else "medium")
    spec = SCANS[name]()
    with tempfile.TemporaryDirectory() as tmp:
        scan = cxi.load_scan(simulate.write_scan(Path(tmp) / "scan.cxi", spec))
    assert scan.ground_truth is not None
    n, gpu_it = len(scan.frames), args.iterations
    it = args.cpu_iterations or (10 if gpu is not None else gpu_it)
    defocus = optics.cosmic_probe_defocus_m(scan.energy_ev)
    cores = sorted(os.sched_getaffinity(0))
    print(
        f"scan {name}: {n} frames of {spec.frame_size}², iterations {it} on CPU, {gpu_it} on GPU, "
        f"cores {cores}"
    )

    def error(recon: epie.Reconstruction) -> float:
        return quality.object_error(recon.object, scan.ground_truth, illumination=recon.illumination)

    def median_run(run: Callable[[], epie.Reconstruction]) -> tuple[epie.Reconstruction, float, float]:
        runs = [timed(run) for _ in range(args.repeats)]
        return runs[0][0], statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs)

    os.sched_setaffinity(0, {cores[0]})
    cpu1, cpu1_s, cpu1_cpu = median_run(lambda: epie.reconstruct(scan, it, probe_defocus_m=defocus))
    one, one_s, one_cpu = median_run(
        lambda: batched.reconstruct(scan, it, probe_defocus_m=defocus, backend=backends.cpu_backend(1))
    )
    os.sched_setaffinity(0, set(cores))
    cpu_backend = backends.cpu_backend()
    many, many_s, many_cpu = median_run(
        lambda: batched.reconstruct(scan, it, probe_defocus_m=defocus, backend=cpu_backend)
    )
    rate_cpu1, rate_one, rate_many = n * it / cpu1_s, n * it / one_s, n * it / many_s
    rows = [
        ("ePIE, 1 core", cpu1_s, rate_cpu1, rate_cpu1, n * it / cpu1_cpu, error(cpu1)),
        ("batched, 1 core", one_s, rate_one, rate_one, n * it / one_cpu, error(one)),
        (
            f"batched, CPU x{cpu_backend.workers}",
            many_s,
            rate_many,
            rate_many / cpu_backend.workers,
            n * it / many_cpu,
            error(many),
        ),
    ]
    gpu_rate = fft_rate = None
    final = many
    if gpu is not None:
        batched.reconstruct(scan, 2, probe_defocus_m=defocus, backend=gpu)  # plans, kernels, pool
        final, gpu_s, _ = median_run(
            lambda: batched.reconstruct(scan, gpu_it, probe_defocus_m=defocus, backend=gpu)
        )
        gpu_rate = n * gpu_it / gpu_s
        fft_rate = fft_bound_frames_per_s(gpu, n, spec.frame_size, final.params["batch_size"])
        rows.append(("batched, GPU", gpu_s, gpu_rate, gpu_rate, float("nan"), error(final)))
    header = ("seconds", "frames·it/s", "per core", "per CPU-s", "obj. error")
    print(f"{'engine':<22} " + " ".join(f"{h:>11}" for h in header))
    for label, seconds, rate, per_core, per_cpu_s, err in rows:
        print(f"{label:<22} {seconds:11.2f} {rate:11.0f} {per_core:11.0f} {per_cpu_s:11.0f} {err:11.4f}")
    per_core_ratio, cpu_time_ratio = rows[2][3] / rate_cpu1, rows[2][4] / rows[0][4]
    print(
        f"batched / ePIE per core: 1 core {rate_one / rate_cpu1:.2f}x; all cores {per_core_ratio:.2f}x wall, "
        f"{cpu_time_ratio:.2f}x CPU time; batch size {many.params['batch_size']}"
    )
    if gpu is not None:
        assert gpu_rate is not None and fft_rate is not None
        print(
            f"GPU: {gpu_rate:.0f} frames·it/s = {gpu_rate / fft_rate:.1%} of the FFT bound "
            f"({fft_rate:.0f} frames/s); 100 iterations: {n * 100 / gpu_rate:.2f} s; peak device memory "
            f"{final.peak_device_bytes / 2**30:.2f} GiB; streamed {final.params['streamed']}"
        )

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}"

    print(
        f"RESULT frames_it_per_s_cpu1={rate_cpu1:.0f} frames_it_per_s_batched_cpu={rate_many:.0f} "
        f"frames_it_per_s_gpu={fmt(gpu_rate)} fft_bound_frames_per_s={fmt(fft_rate)} "
        f"object_error={error(final):.4f} object_error_cpu1={error(cpu1):.4f} "
        f"frames_it_per_s_batched_1core={rate_one:.0f} batched_1core_ratio={rate_one / rate_cpu1:.2f} "
        f"batched_cpu_workers={cpu_backend.workers} batched_cpu_per_core_ratio={per_core_ratio:.2f} "
        f"batched_cpu_time_ratio={cpu_time_ratio:.2f}"
    )


if __name__ == "__main__":
    main()
