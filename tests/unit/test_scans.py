import contextlib
import random

import pytest

from cosmic_dagster.domain.scans import (
    KEY_CHARS,
    ScanPathError,
    normalize_relpath,
    relpath_for_key,
    relpath_under_root,
    resolve_under_root,
    scan_key,
)

HOSTILE = [
    "2023/02/230216/NS_230216033_ccdframes_0_0.cxi",
    "2023/02/230216/NS_230216033_ccdframes_0_0_cosmic2.cxi",
    "2023/02/230217/NS_230216033_ccdframes_0_0.cxi",  # folder disagrees with the name
    "1923/02/230216/NS_230216033_ccdframes_0_0.cxi",  # wrong century
    "2023/02/230216/scan with spaces.cxi",
    "2023/02/230216/scan,with,commas.cxi",
    "2023/02/230216/scan|pipe.cxi",
    "2023/02/230216/ünïcödé_скан_走査.cxi",
    "2023/02/230216/a_b.cxi",
    "2023/02/230216/a/b.cxi",
    "2023/02/230216/a_-b.cxi",
    "2023/02/230216/a__b.cxi",
    "2023/02/230216/a_x2fb.cxi",
    "2023/02/230216/p.x.cxi",
    "NS_230216033_ccdframes_0_0.cxi",
    "x/{'a': 1}.cxi",
    "tab\there/new\nline.cxi",
]


@pytest.mark.parametrize("relpath", HOSTILE)
def test_keys_use_safe_characters_and_round_trip(relpath):
    key = scan_key(relpath)
    assert KEY_CHARS.match(key), key
    assert relpath_for_key(key) == relpath


def test_keys_never_collide_on_hostile_and_random_names():
    rng = random.Random(7)
    alphabet = "ab_-/.,| xé走0NS"
    paths = set(HOSTILE)
    while len(paths) < 5000:
        parts = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 3))
        ]
        with contextlib.suppress(ScanPathError):
            paths.add(normalize_relpath("/".join(parts)))
    keys = {scan_key(p) for p in paths}
    assert len(keys) == len(paths)


def test_canonical_cosmic_paths_get_readable_keys():
    assert scan_key("2023/02/230216/NS_230216033_ccdframes_0_0.cxi") == "NS_230216033_ccdframes_0_0"
    assert scan_key("2023/02/230216/scan.cxi").startswith("p.")


@pytest.mark.parametrize(
    "bad", ["", "/abs/x.cxi", "../x.cxi", "a/../x.cxi", "a//x.cxi", "./x.cxi", "a\x00.cxi"]
)
def test_unsafe_relative_paths_are_refused(bad):
    with pytest.raises(ScanPathError):
        scan_key(bad)


@pytest.mark.parametrize("bad_key", ["", "NS_1", "p.a_zz", "p.a_x4", "p.a,b", "hello"])
def test_non_keys_are_refused(bad_key):
    with pytest.raises(ValueError):
        relpath_for_key(bad_key)


def test_symlink_leaving_the_root_is_refused(tmp_path):
    root = tmp_path / "beamline"
    (root / "2023").mkdir(parents=True)
    outside = tmp_path / "secret.cxi"
    outside.write_bytes(b"x")
    (root / "2023" / "evil.cxi").symlink_to(outside)
    (root / "2023" / "ok.cxi").write_bytes(b"x")
    with pytest.raises(ScanPathError, match="outside the beamline root"):
        resolve_under_root(root, "2023/evil.cxi")
    assert resolve_under_root(root, "2023/ok.cxi") == (root / "2023" / "ok.cxi").resolve()
    with pytest.raises(ScanPathError, match="not under the beamline root"):
        relpath_under_root(root, outside)
    assert relpath_under_root(root, root / "2023" / "ok.cxi") == "2023/ok.cxi"
