"""The local adapter's pruning side: what it refuses to call the registered file, and deletes."""

import hashlib
from pathlib import Path

from cosmic_dagster.transfer.local import LocalTransfer
from cosmic_dagster.transfer.protocol import TransferItem


def item(root: Path, relpath: str, data: bytes = b"scan bytes") -> TransferItem:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return TransferItem(relpath.replace("/", "_"), relpath, len(data), hashlib.sha256(data).hexdigest())


def test_links_leaving_the_root_paths_with_dotdot_and_folders_are_never_plain_files(tmp_path: Path):
    root, outside = tmp_path / "beamline", tmp_path / "elsewhere"
    plain = item(root, "2026/11/261124/a.cxi")
    target = item(outside, "b.cxi")
    (root / "2026/11/261124/b.cxi").symlink_to(outside / "b.cxi")
    escaping = TransferItem("b", "2026/11/261124/b.cxi", target.size, target.sha256)
    dotdot = TransferItem("c", "../elsewhere/b.cxi", target.size, target.sha256)
    (root / "2026/11/261124/d.cxi").mkdir()
    folder = TransferItem("d", "2026/11/261124/d.cxi", 0, "")
    transfer = LocalTransfer(root, tmp_path / "nersc")
    found = transfer.inspect_sources([plain, escaping, dotdot, folder])
    assert found[plain.key].problem is None and found[plain.key].size == plain.size
    assert "outside the beamline root" in found["b"].problem
    assert "relative and normalized" in found["c"].problem
    assert found["d"].problem == "not a regular file"
    deleted = transfer.delete_sources([plain, escaping, dotdot, folder])
    assert [k for k, c in deleted.items() if c.ok] == [plain.key]
    assert not (root / plain.relpath).exists() and (outside / "b.cxi").exists()


def test_a_copy_is_verified_by_its_bytes_not_its_name(tmp_path: Path):
    root, nersc = tmp_path / "beamline", tmp_path / "nersc"
    scan = item(root, "2026/11/261124/a.cxi", b"0123456789")
    transfer = LocalTransfer(root, nersc)
    assert not transfer.verify_copies([scan])[scan.key].ok  # no copy yet
    assert transfer.copy_batch([scan], "t").outcomes[scan.key].ok
    assert transfer.verify_copies([scan])[scan.key].ok
    (nersc / scan.relpath).write_bytes(b"9876543210")  # same name, same size
    check = transfer.verify_copies([scan])[scan.key]
    assert not check.ok and "differs from the registered" in check.detail
