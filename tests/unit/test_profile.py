"""`bench.profile`'s readings of py-spy's and pg_waldump's output, and its arguments."""

from __future__ import annotations

import pytest

from bench import profile

RAW = """\
<module> (a.py:1);main (a.py:9);loop (a.py:20);send (b.py:5) 6
<module> (a.py:1);main (a.py:9);loop (a.py:21);parse (c.py:7) 3
<module> (a.py:1);main (a.py:9);loop (a.py:20);loop (a.py:30) 1
not a sample line
"""


def test_py_spy_samples_by_own_and_inclusive_function() -> None:
    got = profile.py_spy_functions(RAW)
    assert got["samples"] == 10
    assert got["own"] == [{"function": "send (b.py)", "percent": 60.0},
                          {"function": "parse (c.py)", "percent": 30.0},
                          {"function": "loop (a.py)", "percent": 10.0}]
    inclusive = {f["function"]: f["percent"] for f in got["inclusive"]}
    # lines of one function are one function; a recursive call counts once per stack
    assert inclusive == {"<module> (a.py)": 100.0, "main (a.py)": 100.0,
                         "loop (a.py)": 100.0, "send (b.py)": 60.0, "parse (c.py)": 30.0}


def test_py_spy_without_samples() -> None:
    assert profile.py_spy_functions("") == {"samples": 0, "own": [], "inclusive": []}


WALDUMP = """\
WAL statistics between 0/2818158 and 0/3E68B20:
Type                                           N      (%)          Record size      (%)
----                                           -      ---          -----------      ---
Transaction/COMMIT                          4706 (  3.37)               165212 (  0.72)
Heap/INSERT                                26862 ( 19.23)              8946666 ( 38.75)
Btree/INSERT_LEAF                          61591 ( 44.08)              4468896 ( 19.35)
                                        --------                      --------
Total                                     139713                      23089546 [99.58%]
"""


def test_waldump_records_by_type_most_first() -> None:
    assert list(profile.waldump_records(WALDUMP).items()) == [
        ("Btree/INSERT_LEAF", 61591), ("Heap/INSERT", 26862), ("Transaction/COMMIT", 4706)]


@pytest.mark.parametrize("args", [["--services", "api,nope"], ["--rate", "0"],
                                  ["--seconds", "-1"]])
def test_bad_arguments_are_refused_before_anything_starts(
        args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[object] = []
    monkeypatch.setattr(profile, "run", lambda *a: started.append(a))
    with pytest.raises(SystemExit) as exited:
        profile.main(args)
    assert exited.value.code == 2
    assert started == []


def test_no_services_means_no_python_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[object, ...]] = []
    monkeypatch.setattr(profile, "run", lambda *a: started.append(a))
    assert profile.main(["--services", "", "--rate", "50", "--seconds", "3"]) == 0
    assert started == [(50, 3.0, [])]


def test_statements_per_video_with_their_planning() -> None:
    """Execution and planning apart, per video; how often a call was planned (1.0: on every
    call, as a statement with a custom plan is)."""
    statement = {"calls": 50, "plans": 50, "rows": 150, "total_exec_time": 30.0,
                 "total_plan_time": 25.0, "query": "WITH new AS (...)"}
    before = {"commits": 1_000, "wal": {"wal_records": 10, "wal_bytes": 100, "wal_fpi": 0},
              "statements": []}
    after = {"commits": 1_450, "wal": {"wal_records": 7_010, "wal_bytes": 1_180_100,
                                       "wal_fpi": 20},
             "statements": [statement, {**statement, "plans": 1, "total_plan_time": 0.5}]}
    out = profile._per_video(before, after, 100, wal_stats=None)
    assert out["transactions"] == 4.5
    assert (out["wal_records"], out["wal_bytes"], out["wal_fpi"]) == (70.0, 11_800.0, 0.2)
    assert [(s["calls"], s["rows_per_call"], s["exec_ms"], s["plans_per_call"], s["plan_ms"])
            for s in out["statements"]] == [(0.5, 3.0, 0.3, 1.0, 0.25),
                                            (0.5, 3.0, 0.3, 0.02, 0.005)]
    assert "wal_records_by_type" not in out
