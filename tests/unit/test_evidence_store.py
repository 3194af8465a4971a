"""The evidence store: bounded by age, per account and in all, counted when it drops; atomic with bookmarks
across kill -9; a 100,000-failure spray stays within its bounds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from exporter.investigate import investigate
from exporter.state import Evidence, EvidenceLimits, StateStore, account_key

ROOT = Path(__file__).resolve().parents[2]


def failure(account: str, when: float, ip: str = "198.51.100.7") -> Evidence:
    return Evidence(account, when, "security_event", "dc1.corp.example", "4771", {"reason": "preauth_failed", "ip": ip})


def test_rows_come_back_newest_first_with_their_detail() -> None:
    store = StateStore(clock=lambda: 1000.0)
    with store.transaction() as put:
        put("bookmark", 7)
        put.evidence([failure("alice", 990.0), failure("alice", 995.0, "203.0.113.9"), failure("bob", 991.0)])
    rows = store.evidence_for("ALICE")
    assert [(r.time, r.detail["ip"]) for r in rows] == [(995.0, "203.0.113.9"), (990.0, "198.51.100.7")]
    assert store.evidence_stats() == (3, {"age": 0, "account_cap": 0, "total_cap": 0})
    assert store.get("bookmark") == 7


def test_bounds_by_age_account_and_total_are_counted() -> None:
    now = [10_000.0]
    store = StateStore(
        limits=EvidenceLimits(retention_seconds=3600, max_rows_per_account=5, max_rows=12), clock=lambda: now[0]
    )
    with store.transaction() as put:
        put.evidence([failure("old", 1000.0), failure("old", 1001.0)])  # older than the retention
        put.evidence([failure("alice", 9000.0 + i) for i in range(8)])  # 3 over the per-account cap
    assert [r.time for r in store.evidence_for("alice")] == [9007.0, 9006.0, 9005.0, 9004.0, 9003.0]
    assert store.evidence_for("old") == []
    assert store.evidence_stats() == (5, {"age": 2, "account_cap": 3, "total_cap": 0})
    with store.transaction() as put:
        put.evidence([failure(f"user{i}", 9500.0 + i) for i in range(10)])  # 15 rows for a cap of 12
    rows, dropped = store.evidence_stats()
    assert (rows, dropped) == (12, {"age": 2, "account_cap": 3, "total_cap": 3})
    assert [r.time for r in store.evidence_for("alice")] == [9007.0, 9006.0]  # the oldest went first


def test_a_failed_transaction_keeps_neither_state_nor_evidence() -> None:
    store = StateStore(clock=lambda: 1000.0)
    with pytest.raises(RuntimeError), store.transaction() as put:
        put("bookmark", 1)
        put.evidence([failure("alice", 999.0)])
        raise RuntimeError("the collector failed half way")
    assert store.get("bookmark") is None
    assert store.evidence_for("alice") == [] and store.evidence_stats()[0] == 0


def test_a_spray_of_100000_failures_stays_within_the_bounds(tmp_path: Path) -> None:
    limits = EvidenceLimits(retention_seconds=86400, max_rows_per_account=50, max_rows=20_000)
    store = StateStore(tmp_path / "state.db", limits, clock=lambda: 200_000.0)
    # One address tries one password on 25,000 accounts, four times round: 100,000 failures.
    for batch in range(20):
        with store.transaction() as put:
            put("bookmark", batch)
            put.evidence(
                failure(f"user{(batch * 5000 + i) % 25_000}", 150_000.0 + batch * 5000 + i) for i in range(5000)
            )
    rows, dropped = store.evidence_stats()
    assert rows == 20_000
    assert dropped == {"age": 0, "account_cap": 0, "total_cap": 80_000}
    store.close()
    reopened = StateStore(tmp_path / "state.db", limits, clock=lambda: 200_000.0)
    assert reopened.evidence_stats()[0] == 20_000  # the count is the table's, not a memory of it
    assert len(reopened.evidence_for("user24999")) == 1
    # Asked about one of its victims, the investigator names the spray, not a stale device of that user.
    victim = reopened.evidence_for("user24999")
    spray = reopened.accounts_per_address({"198.51.100.7"}, since=0.0)
    verdict = investigate("user24999", victim, spray=spray, password_last_set=100_000.0, created=0.0)
    (source,) = verdict.sources
    assert source.value == "198.51.100.7" and source.spray_accounts == 20_000 and not source.stale_credential
    assert any("password spray" in line for line in source.evidence)
    reopened.close()


WRITER = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path
    from exporter.state import Evidence, StateStore

    store = StateStore(Path(sys.argv[1]))
    batch = (store.get("bookmark") or -1) + 1
    while True:
        with store.transaction() as put:
            put("bookmark", batch)
            put.evidence(
                Evidence(f"user{i}", time.time(), "security_event", "dc1", "4625", {"batch": str(batch)})
                for i in range(200)
            )
        print(batch, flush=True)
        batch += 1
    """
)


def test_kill_9_loses_and_doubles_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _run in range(2):  # killed, then resumed and killed again
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout is not None
        for line in child.stdout:  # the commits it reports, until well into its work
            if int(line) % 40 == 39:
                break
        child.send_signal(signal.SIGKILL)  # in the middle of the next transaction, most likely
        child.wait()
    store = StateStore(path)
    last = store.get("bookmark")
    rows, _ = store.evidence_stats()
    assert rows == (last + 1) * 200
    batches = Counter(r.detail["batch"] for r in store.evidence_for("user7", limit=10_000))
    assert batches == Counter({str(b): 1 for b in range(last + 1)})
    store.close()


def test_accounts_per_address_shows_a_spray() -> None:
    store = StateStore(clock=lambda: 10_000.0)
    with store.transaction() as put:
        put.evidence(failure(f"user{i}", 9000.0 + i, "203.0.113.66") for i in range(40))
        put.evidence([failure("alice", 9500.0, "198.51.100.7"), failure("alice", 9501.0, "198.51.100.7")])
        put.evidence([Evidence("bob", 9600.0, "iis", "ex1", "401", {"client_ip": "198.51.100.7"})])
        put.evidence([failure("carol", 5000.0, "198.51.100.7")])  # before the window asked about
    counts = store.accounts_per_address(["203.0.113.66", "198.51.100.7", "192.0.2.1", ""], since=8000.0)
    assert counts == {"203.0.113.66": 40, "198.51.100.7": 2}


def test_one_account_named_three_ways_is_kept_under_one_key() -> None:
    state = StateStore()
    with state.transaction() as put:
        put.evidence(
            Evidence(name, time.time() + i, "iis", "ex1", "401")
            for i, name in enumerate(("CONTOSO\\JDoe", "jdoe@contoso.com", "jdoe"))
        )
    assert len(state.evidence_for("jdoe")) == 3
    assert len(state.evidence_for("Contoso\\jdoe")) == 3
    assert account_key("  LAB\\svc_report ") == "svc_report" and account_key("a@b@c") == "a"


def test_the_read_only_check_changes_nothing_on_a_writable_directory(tmp_path: Path) -> None:
    from exporter.state import _read_only_file_system

    os.utime(tmp_path, ns=(1_000_000_000, 2_000_000_000))
    assert not _read_only_file_system(tmp_path / "state.db")
    assert not _read_only_file_system(None)
    times = os.stat(tmp_path)
    assert (times.st_atime_ns, times.st_mtime_ns) == (1_000_000_000, 2_000_000_000)
