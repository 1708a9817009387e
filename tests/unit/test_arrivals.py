import os
import time

from cosmic_dagster.domain.arrivals import Cursor, DirectoryLister, discover, recent_day_folders


def touch(root, relpath, age=60.0, data=b"x"):
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = time.time() - age
    os.utime(path, (t, t))
    return path


class CountingLister(DirectoryLister):
    def __init__(self, root):
        super().__init__(root)
        self.calls = []

    def list_dir(self, relpath):
        self.calls.append(relpath)
        return super().list_dir(relpath)


def test_only_recent_day_folders_are_listed(tmp_path):
    for day in ["2022/12/221231", "2023/01/230101", "2023/02/230215", "2023/02/230216"]:
        touch(tmp_path, f"{day}/NS_{day[-6:]}001_ccdframes_0_0.cxi")
    lister = CountingLister(tmp_path)
    assert recent_day_folders(lister, 2) == ["2023/02/230216", "2023/02/230215"]
    found = discover(lister, Cursor.load(None), now=time.time(), recent_days=2)
    assert [a.relpath for a in found.arrivals] == [
        "2023/02/230215/NS_230215001_ccdframes_0_0.cxi",
        "2023/02/230216/NS_230216001_ccdframes_0_0.cxi",
    ]
    assert "2022/12" not in lister.calls and "2023/01" not in lister.calls


def test_partial_and_settling_files_wait_and_cursor_prevents_repeats(tmp_path):
    day = "2023/02/230216"
    touch(tmp_path, f"{day}/a.cxi")
    touch(tmp_path, f"{day}/b.cxi.tmp")  # still being written (renamed when done)
    touch(tmp_path, f"{day}/c.cxi", age=0.0)  # written in place a moment ago
    lister = DirectoryLister(tmp_path)
    first = discover(lister, Cursor.load(None), now=time.time(), settle_seconds=5)
    assert [a.relpath for a in first.arrivals] == [f"{day}/a.cxi"]
    assert first.pending == 1
    os.replace(tmp_path / day / "b.cxi.tmp", tmp_path / day / "b.cxi")
    second = discover(lister, Cursor.load(first.cursor.dump()), now=time.time() + 10, settle_seconds=5)
    assert sorted(a.relpath for a in second.arrivals) == [f"{day}/b.cxi", f"{day}/c.cxi"]
    third = discover(lister, Cursor.load(second.cursor.dump()), now=time.time() + 20, settle_seconds=5)
    assert third.arrivals == []


def test_cap_per_tick_keeps_the_rest_for_later(tmp_path):
    day = "2023/02/230216"
    for i in range(7):
        touch(tmp_path, f"{day}/s{i}.cxi", age=100 - i)
    lister = DirectoryLister(tmp_path)
    cursor, seen = Cursor.load(None), []
    for _ in range(4):
        found = discover(lister, cursor, now=time.time(), max_per_tick=3)
        seen += [a.relpath for a in found.arrivals]
        cursor = Cursor.load(found.cursor.dump())
    assert seen == [f"{day}/s{i}.cxi" for i in range(7)]


def test_rejections_are_reported_once(tmp_path):
    day = "2023/02/230216"
    touch(tmp_path, f"{day}/bad.cxi")
    lister = DirectoryLister(tmp_path)
    found = discover(lister, Cursor.load(None), now=time.time(), accept=lambda p: "nope")
    assert [r.relpath for r in found.rejections] == [f"{day}/bad.cxi"] and found.arrivals == []
    again = discover(lister, Cursor.load(found.cursor.dump()), now=time.time(), accept=lambda p: "nope")
    assert again.rejections == []


def test_cursor_forgets_days_outside_the_window(tmp_path):
    for day in ["2023/02/230214", "2023/02/230215", "2023/02/230216"]:
        touch(tmp_path, f"{day}/x.cxi")
    found = discover(DirectoryLister(tmp_path), Cursor.load(None), now=time.time(), recent_days=2)
    assert sorted(found.cursor.done) == ["2023/02/230215", "2023/02/230216"]
