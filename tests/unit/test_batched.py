"""The mini-batch engine: convergence against ePIE, one result on every backend layout (the GPU's
index gather/scatter run through numpy), streaming under a tiny memory budget, backend selection
without CuPy, and a same-seed CPU/GPU comparison where a GPU is present."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from cosmic_dagster.ptycho import batched, cxi, epie, optics, quality, simulate
from cosmic_dagster.ptycho import xp as backends
from cosmic_dagster.ptycho.simulate import SimulationSpec

NAME = "NS_230216033_ccdframes_0_0.cxi"
ITERATIONS = 20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> cxi.ScanData:
    return cxi.load_scan(simulate.write_scan(tmp_path_factory.mktemp("tiny") / NAME, SimulationSpec.tiny()))


def _run(scan: cxi.ScanData, backend: backends.Backend, **kwargs: object) -> epie.Reconstruction:
    defocus = optics.cosmic_probe_defocus_m(scan.energy_ev)
    return batched.reconstruct(
        scan, ITERATIONS, probe_defocus_m=defocus, backend=backend, batch_size=4, **kwargs
    )


def _object_error(recon: epie.Reconstruction, scan: cxi.ScanData) -> float:
    assert scan.ground_truth is not None
    return quality.object_error(recon.object, scan.ground_truth, illumination=recon.illumination)


@pytest.fixture(scope="module")
def reference(tiny: cxi.ScanData) -> epie.Reconstruction:
    return _run(tiny, backends.cpu_backend(1))


def test_converges_at_least_as_well_as_epie(tiny: cxi.ScanData, reference: epie.Reconstruction) -> None:
    sequential = epie.reconstruct(tiny, ITERATIONS, probe_defocus_m=reference.params["probe_defocus_m"])
    assert reference.fourier_error[0] / reference.fourier_error[-1] >= 3
    assert _object_error(reference, tiny) <= min(0.10, _object_error(sequential, tiny) + 0.01)
    assert reference.object.dtype == reference.probe.dtype == np.complex64
    assert reference.device == reference.params["device"] == "cpu"
    assert reference.peak_device_bytes == 0 and not reference.params["streamed"]
    assert reference.params["batch_size"] == 4 and len(reference.fourier_error) == ITERATIONS


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param(backends.cpu_backend(2), id="two-threads"),
        pytest.param(backends.cpu_backend(1, indexed=True, group_bytes=None), id="gpu-layout-on-numpy"),
        pytest.param(backends.cpu_backend(3, indexed=True, group_bytes=1), id="indexed-threads-per-frame"),
    ],
)
def test_every_layout_gives_the_same_result(
    tiny: cxi.ScanData, reference: epie.Reconstruction, backend: backends.Backend
) -> None:
    """Threads, groups and index scatter only change summation order: single-precision tolerance."""
    recon = _run(tiny, backend)
    np.testing.assert_allclose(recon.fourier_error, reference.fourier_error, rtol=1e-4)
    scale = float(np.abs(reference.object).max())
    np.testing.assert_allclose(recon.object, reference.object, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(
        recon.probe, reference.probe, rtol=0, atol=1e-4 * float(np.abs(reference.probe).max())
    )
    peak = float(reference.illumination.max())
    np.testing.assert_allclose(recon.illumination, reference.illumination, rtol=0, atol=1e-4 * peak)


def test_a_scan_over_the_memory_budget_streams_with_the_same_result(
    tiny: cxi.ScanData, reference: epie.Reconstruction
) -> None:
    recon = _run(tiny, backends.cpu_backend(1), memory_budget_bytes=tiny.frames.nbytes // 2)
    assert recon.params["streamed"]
    np.testing.assert_array_equal(recon.object, reference.object)
    assert recon.fourier_error == reference.fourier_error


def test_an_upload_that_runs_out_of_memory_streams_instead(
    tiny: cxi.ScanData, reference: epie.Reconstruction
) -> None:
    class SmallDevice(backends.Backend):
        """numpy, but the "device" refuses arrays over half the frames' size, as a full GPU does."""

        def to_device(self, host: np.ndarray) -> np.ndarray:
            if host.nbytes > tiny.frames.nbytes // 2:
                raise MemoryError(f"out of memory allocating {host.nbytes} bytes")
            return super().to_device(host)

    cpu = backends.cpu_backend(1)
    recon = _run(tiny, SmallDevice(**{f.name: getattr(cpu, f.name) for f in dataclasses.fields(cpu)}))
    assert recon.params["streamed"]
    np.testing.assert_array_equal(recon.object, reference.object)


def test_the_batch_order_follows_the_seed(tiny: cxi.ScanData, reference: epie.Reconstruction) -> None:
    other = _run(tiny, backends.cpu_backend(1), seed=1)
    assert other.fourier_error != reference.fourier_error
    assert _object_error(other, tiny) <= 0.10


def test_default_batch_size_depends_on_the_scan_only() -> None:
    assert batched.default_batch_size(16) == 4
    assert batched.default_batch_size(64) == 16
    assert batched.default_batch_size(2_500) == batched.MAX_DEFAULT_BATCH
    assert batched.default_batch_size(3) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iterations": 0}, "iterations"),
        ({"batch_size": 0}, "batch_size"),
        ({"alpha": 0.0}, "alpha"),
        ({"object_regularisation": 0.0}, "regularisation"),
    ],
)
def test_bad_parameters_are_refused(tiny: cxi.ScanData, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        batched.reconstruct(tiny, **{"iterations": 2, "device": "cpu", **kwargs})


def test_device_selection() -> None:
    assert backends.select("cpu").device == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        backends.select("tpu")
    with pytest.raises(ValueError, match="workers"):
        backends.cpu_backend(0)


def test_without_cupy_the_engine_imports_and_auto_means_cpu() -> None:
    """Run in a fresh interpreter where ``import cupy`` fails, whatever this machine has installed."""
    code = (
        "import sys; sys.modules['cupy'] = None\n"
        "from cosmic_dagster.ptycho import batched, xp\n"
        "assert xp.select('auto').device == 'cpu'\n"
        "try:\n    xp.select('gpu')\nexcept xp.BackendUnavailable as exc:\n    print('unavailable:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "unavailable: CuPy is not importable" in done.stdout


def _gpu_usable() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        backends.gpu_backend()
    except backends.BackendUnavailable:
        return False
    return True


@pytest.mark.skipif(not _gpu_usable(), reason="needs CuPy and a CUDA device")
def test_gpu_matches_cpu_on_the_same_seed(tiny: cxi.ScanData, reference: epie.Reconstruction) -> None:
    recon = _run(tiny, backends.gpu_backend())
    assert recon.device == "gpu" and recon.peak_device_bytes > 0
    np.testing.assert_allclose(recon.fourier_error, reference.fourier_error, rtol=1e-3)
    scale = float(np.abs(reference.object).max())
    np.testing.assert_allclose(recon.object, reference.object, rtol=0, atol=1e-3 * scale)
