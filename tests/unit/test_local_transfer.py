import hashlib
import os

from cosmic_dagster.transfer.local import LocalTransfer
from cosmic_dagster.transfer.protocol import TransferItem


def item(root, relpath, data: bytes, key="k"):
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return TransferItem(key=key, relpath=relpath, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def test_copy_is_verified_then_idempotent(tmp_path):
    src, dst = tmp_path / "beamline", tmp_path / "nersc"
    it = item(src, "2023/02/230216/a.cxi", b"scan" * 1000)
    transfer = LocalTransfer(src, dst)
    first = transfer.copy_batch([it], "t").outcomes["k"]
    assert first.ok and not first.already_present and first.bytes == 4000
    assert (dst / it.relpath).read_bytes() == b"scan" * 1000
    mtime = os.stat(dst / it.relpath).st_mtime_ns
    second = transfer.copy_batch([it], "t").outcomes["k"]
    assert second.ok and second.already_present
    assert os.stat(dst / it.relpath).st_mtime_ns == mtime
    assert [p.name for p in (dst / "2023/02/230216").iterdir()] == ["a.cxi"]  # no temp file left


def test_bad_items_do_not_block_good_ones(tmp_path):
    src, dst = tmp_path / "beamline", tmp_path / "nersc"
    good = item(src, "d/good.cxi", b"good", key="good")
    gone = item(src, "d/gone.cxi", b"gone", key="gone")
    (src / "d/gone.cxi").unlink()
    changed = item(src, "d/changed.cxi", b"before", key="changed")
    (src / "d/changed.cxi").write_bytes(b"after!")
    report = LocalTransfer(src, dst).copy_batch([good, gone, changed], "t")
    assert report.outcomes["good"].ok
    assert "vanished" in report.outcomes["gone"].error
    assert "checksum mismatch" in report.outcomes["changed"].error
    assert not (dst / "d/changed.cxi").exists() and not (dst / "d/gone.cxi").exists()
    assert sorted(p.name for p in (dst / "d").iterdir()) == ["good.cxi"]


def test_symlink_escaping_the_source_root_is_refused(tmp_path):
    src, dst = tmp_path / "beamline", tmp_path / "nersc"
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")
    (src / "d").mkdir(parents=True)
    (src / "d/evil.cxi").symlink_to(secret)
    it = TransferItem("evil", "d/evil.cxi", 6, hashlib.sha256(b"secret").hexdigest())
    outcome = LocalTransfer(src, dst).copy_batch([it], "t").outcomes["evil"]
    assert not outcome.ok and "outside the beamline root" in outcome.error
    assert not (dst / "d/evil.cxi").exists()
