"""The restricted unpickler: numpy data loads, code-executing pickles are refused unexecuted."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from act3d.data.safe_pickle import UnsafePickleError, safe_load_pickle, safe_loads_pickle


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_payloads_round_trip(tmp_path, protocol):
    rng = np.random.default_rng(0)
    obj = (
        [rng.random((16, 6)).astype(np.float32) for _ in range(3)],
        [np.array([k], dtype=np.int32) for k in range(3)],
        {"train": [(rng.random((4, 6)), np.int64(2), 7)], "name": "x", "f": 1.5, "b": b"\x00"},
        np.float32(3.0),
        np.arange(5, dtype=np.int16)[::2],  # non-contiguous
    )
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    got = safe_load_pickle(path)
    for a, b in zip(got[0], obj[0]):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32
    assert [int(x[0]) for x in got[1]] == [0, 1, 2]
    assert got[2]["train"][0][1] == 2 and got[2]["name"] == "x" and got[2]["b"] == b"\x00"
    assert got[3] == np.float32(3.0)
    np.testing.assert_array_equal(got[4], [0, 2, 4])


class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class _Subprocess:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import subprocess

        return (subprocess.call, (["touch", str(self.marker)],))


@pytest.mark.parametrize(
    "cls, refused",
    [(_System, ("posix.system", "nt.system", "os.system")), (_Exec, ("builtins.exec",)),
     (_Subprocess, ("subprocess.call",))],
)
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, cls, refused):
    marker = tmp_path / "side_effect"
    path = tmp_path / "evil.dat"
    # wrap the payload in an innocent-looking ModelNet-style pair
    path.write_bytes(pickle.dumps(([np.zeros((2, 6), np.float32), cls(marker)], [np.zeros(1)])))
    assert not marker.exists()
    with pytest.raises(UnsafePickleError) as info:
        safe_load_pickle(path)
    msg = str(info.value)
    assert str(path) in msg
    assert any(name in msg for name in refused), msg
    assert not marker.exists(), "the malicious pickle executed"
    # an unrestricted pickle.load would run it: the fixture really is malicious
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_refused_error_is_a_value_error(tmp_path):
    data = pickle.dumps(eval)  # a bare global reference
    with pytest.raises(ValueError, match="builtins.eval"):
        safe_loads_pickle(data, source="blob")


def test_garbage_and_missing_files(tmp_path):
    bad = tmp_path / "garbage.pkl"
    bad.write_bytes(b"definitely not a pickle")
    with pytest.raises(ValueError, match="garbage.pkl"):
        safe_load_pickle(bad)
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        safe_load_pickle(tmp_path / "nope.pkl")
