"""State that must survive restarts: event bookmarks, log checkpoints, the counters they feed, and evidence.

One SQLite file. A collector writes a bookmark (or a file offset), the counters that the events up to it
added and the per-account evidence they carry (who failed where, from which address or device) in one
transaction, so after a crash either all are stored or none: nothing is counted twice and nothing is lost.
Without a path the state lives in memory and starts afresh with each process.

Evidence is bounded by age, rows per account and rows in all (``EvidenceLimits``); the oldest rows go first and
what is dropped is counted by reason, in the same transaction.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter import clock as domain_time

DROP_REASONS = ("age", "account_cap", "total_cap")
_DROPPED_KEY = "evidence/dropped"
# Why the database refused, from SQLite's primary result codes: a bounded label value each.
STATE_ERROR_REASONS = ("locked", "read_only", "disk_full", "corrupt", "io_error", "other")
_SQLITE_REASONS = {5: "locked", 6: "locked", 8: "read_only", 13: "disk_full", 11: "corrupt", 26: "corrupt",
                   10: "io_error", 14: "io_error"}  # fmt: skip
_BUSY_TIMEOUT = 2.0  # seconds a write waits for another process' lock before it is reported as locked


class StateError(Exception):
    """The state database refused a read or a write: ``reason`` is one of STATE_ERROR_REASONS. Nothing was
    stored; the caller keeps (or rewinds to) what was last committed, so nothing is lost once it works again."""

    def __init__(self, path: Path | None, reason: str, detail: str) -> None:
        super().__init__(f"state database {path or ':memory:'}: {reason} ({detail})")
        self.reason = reason


def _reason(exc: sqlite3.Error, path: Path | None) -> str:
    """Why the database at ``path`` refused. SQLite reports a write refused by a file system gone read-only as a
    plain I/O error (its errno is not passed on): the file system says which it is."""
    reason = _sqlite_reason(exc)
    return "read_only" if reason == "io_error" and _read_only_file_system(path) else reason


def _sqlite_reason(exc: sqlite3.Error) -> str:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return _SQLITE_REASONS.get(code & 0xFF, "other")
    text = str(exc).lower()
    for needle, reason in (("locked", "locked"), ("readonly", "read_only"), ("read-only", "read_only"),
                           ("full", "disk_full"), ("malformed", "corrupt"), ("not a database", "corrupt")):  # fmt: skip
        if needle in text:
            return reason
    return "other"


def _read_only_file_system(path: Path | None) -> bool:
    """Whether the file system holding ``path`` refuses writes now, as after ext4's errors=remount-ro.

    Newer kernels mark that in ext4 alone (emergency_ro), not in the mount flags statvfs reads: so the directory's
    own times are set to what they are, a write that changes nothing. (Not a file of the database's: closing any
    descriptor of it would drop SQLite's locks.)"""
    if path is None:
        return False
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return True
        now = os.stat(path.parent)
        os.utime(path.parent, ns=(now.st_atime_ns, now.st_mtime_ns))
    except OSError as exc:
        return exc.errno == errno.EROFS
    return False


def account_key(name: str) -> str:
    """The name evidence is kept under: lower case, without a ``DOMAIN\\`` prefix or a UPN's ``@domain``.

    Sources name one account several ways (a phone's ``User=CONTOSO\\jdoe`` or ``jdoe@contoso.com``, a 4776's
    ``jdoe``); kept under one key, an investigation finds them all. (A UPN whose user part differs from the
    sAMAccountName is kept under the user part.)"""
    user = name.strip().lower().rpartition("\\")[2]
    return user.partition("@")[0] if "@" in user else user


@dataclass(frozen=True)
class Evidence:
    """One thing that happened to an account, as a source logged it."""

    account: str  # lower case, as the source names it (sAMAccountName, or the user part of a UPN)
    time: float
    source: str  # "security_event", "iis", "smtp_auth"
    host: str  # the DC or Exchange server that logged it
    kind: str  # "4625", "4771", "4776", "4740", "401", "auth_failure"
    detail: Mapping[str, str] = field(default_factory=dict)  # reason, ip, workstation, device_id, ...


@dataclass(frozen=True)
class EvidenceLimits:
    retention_seconds: float = 7 * 86400.0
    max_rows_per_account: int = 1000
    max_rows: int = 200_000


class Transaction:
    """What ``StateStore.transaction`` yields: ``put(key, value)`` for state, ``evidence(rows)`` for evidence."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.accounts: set[str] = set()
        self.added = 0

    def __call__(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value, sort_keys=True)),
        )

    def evidence(self, rows: Iterable[Evidence]) -> None:
        batch = [
            (account_key(e.account), e.time, e.source, e.host, e.kind, json.dumps(dict(e.detail), sort_keys=True))
            for e in rows
        ]
        if not batch:
            return
        self._db.executemany(
            "INSERT INTO evidence (account, time, source, host, kind, detail) VALUES (?, ?, ?, ?, ?, ?)", batch
        )
        self.accounts.update(row[0] for row in batch)
        self.added += len(batch)


class StateStore:
    def __init__(
        self,
        path: Path | None = None,
        limits: EvidenceLimits | None = None,
        clock: Callable[[], float] = domain_time.now,
    ) -> None:
        self.path = path
        self.limits = limits or EvidenceLimits()
        self.clock = clock
        self._lock = threading.Lock()
        self.errors = dict.fromkeys(STATE_ERROR_REASONS, 0)
        self.healthy = True  # the last read or write went through
        self.write_in_flight = False  # between BEGIN and COMMIT/ROLLBACK, waits for another's lock included
        self._dropped_cache: dict[str, int] = {}
        try:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(path, "read_only" if exc.errno == errno.EROFS else "io_error", str(exc)) from None
        try:
            self._db = sqlite3.connect(
                str(path) if path else ":memory:", isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT
            )
        except sqlite3.Error as exc:
            raise StateError(path, _reason(exc, path), str(exc)) from None
        try:
            self._open()
        except sqlite3.Error as exc:
            self._db.close()
            raise StateError(path, _reason(exc, path), str(exc)) from None

    def _open(self) -> None:
        if self.path is not None:
            # WAL with full sync: a committed transaction survives a crash or a power cut.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # A damaged file is found at start, not in the middle of a commit hours later.
            problems = self._db.execute("PRAGMA quick_check").fetchall()
            if problems != [("ok",)]:
                raise sqlite3.DatabaseError(f"database disk image is malformed: {problems[0][0]}")
        self._db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS evidence (id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT NOT NULL, "
            "time REAL NOT NULL, source TEXT NOT NULL, host TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS evidence_account ON evidence (account, time)")
        self._db.execute("CREATE INDEX IF NOT EXISTS evidence_time ON evidence (time)")
        self._rows: int = self._db.execute("SELECT COUNT(*) FROM evidence").fetchone()[0]
        # The patch-day report's samples of each Exchange server and the build changes seen (exporter/patch_days.py).
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS patch_day_samples "
            "(server TEXT NOT NULL, time REAL NOT NULL, facts TEXT NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS patch_day_samples_time ON patch_day_samples (time)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS patch_day_changes (id INTEGER PRIMARY KEY AUTOINCREMENT, server TEXT NOT NULL, "
            "time REAL NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL)"
        )

    def _failed(self, exc: sqlite3.Error) -> StateError:
        error = StateError(self.path, _reason(exc, self.path), str(exc))
        self.errors[error.reason] += 1
        self.healthy = False
        return error

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            try:
                row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as exc:
                raise self._failed(exc) from None
        return default if row is None else json.loads(row[0])

    def put_many(self, values: Mapping[str, Any]) -> None:
        """Store every key in one transaction."""
        with self.transaction() as put:
            for key, value in values.items():
                put(key, value)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Yields a ``Transaction``: everything put and every evidence row is committed together, or nothing is
        on an exception; the evidence bounds are applied before the commit."""
        with self._lock:
            rows = self._rows
            try:
                with self._writing():
                    tx = Transaction(self._db)
                    yield tx
                    if tx.added:
                        self._rows += tx.added
                        self._bound(tx)
            except BaseException:
                self._rows = rows
                raise

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT (the caller holds the lock); ROLLBACK on any exception; SQLite's errors
        come out as StateError with their reason."""
        self.write_in_flight = True
        try:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._failed(exc) from None
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise self._failed(exc) from None
                raise
        finally:
            self.write_in_flight = False
        self.healthy = True

    def _rollback(self) -> None:
        # A failed COMMIT (a full disk) may have ended the transaction already; a corrupt file may refuse this too.
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def _bound(self, tx: Transaction) -> None:
        """Drop the oldest evidence beyond the limits (inside the open transaction) and count what went."""
        limits = self.limits
        dropped = dict.fromkeys(DROP_REASONS, 0)
        cursor = self._db.execute("DELETE FROM evidence WHERE time < ?", (self.clock() - limits.retention_seconds,))
        dropped["age"] = cursor.rowcount
        for account in tx.accounts:
            cursor = self._db.execute(
                "DELETE FROM evidence WHERE id IN (SELECT id FROM evidence WHERE account = ? "
                "ORDER BY time DESC, id DESC LIMIT -1 OFFSET ?)",
                (account, limits.max_rows_per_account),
            )
            dropped["account_cap"] += cursor.rowcount
        self._rows -= dropped["age"] + dropped["account_cap"]
        if self._rows > limits.max_rows:
            cursor = self._db.execute(
                "DELETE FROM evidence WHERE id IN (SELECT id FROM evidence ORDER BY time, id LIMIT ?)",
                (self._rows - limits.max_rows,),
            )
            dropped["total_cap"] = cursor.rowcount
            self._rows -= cursor.rowcount
        if any(dropped.values()):
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (_DROPPED_KEY,)).fetchone()
            totals = json.loads(row[0]) if row else {}
            tx(_DROPPED_KEY, {r: int(totals.get(r, 0)) + dropped[r] for r in DROP_REASONS})

    def record_patch_day_sample(
        self,
        server: str,
        at: float,
        facts: Mapping[str, Any],
        changes: Iterable[tuple[float, str, str]],
        *,
        keep_seconds: float,
        max_changes: int,
    ) -> None:
        """A server's sample and the build changes found with it, in one transaction; samples older than
        ``keep_seconds`` and changes beyond the newest ``max_changes`` go."""
        with self._lock, self._writing():
            self._db.execute(
                "INSERT INTO patch_day_samples (server, time, facts) VALUES (?, ?, ?)",
                (server, at, json.dumps(facts, separators=(",", ":"))),
            )
            for when, old, new in changes:
                self._db.execute(
                    "INSERT INTO patch_day_changes (server, time, old, new) VALUES (?, ?, ?, ?)",
                    (server, when, old, new),
                )
            self._db.execute("DELETE FROM patch_day_samples WHERE time < ?", (at - keep_seconds,))
            self._db.execute(
                "DELETE FROM patch_day_changes WHERE id IN (SELECT id FROM patch_day_changes "
                "ORDER BY time DESC, id DESC LIMIT -1 OFFSET ?)",
                (max_changes,),
            )

    def _rows_of(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, parameters).fetchall()
            except sqlite3.Error as exc:
                raise self._failed(exc) from None

    def patch_day_changes(self) -> list[tuple[str, float, str, str]]:
        return self._rows_of("SELECT server, time, old, new FROM patch_day_changes ORDER BY time, id")

    def patch_day_samples(self, since: float) -> list[tuple[str, float, dict[str, Any]]]:
        rows = self._rows_of(
            "SELECT server, time, facts FROM patch_day_samples WHERE time >= ? ORDER BY time", (since,)
        )
        return [(server, at, json.loads(facts)) for server, at, facts in rows]

    def evidence_for(self, account: str, limit: int = 1000) -> list[Evidence]:
        """The account's evidence, newest first."""
        rows = self._rows_of(
            "SELECT account, time, source, host, kind, detail FROM evidence WHERE account = ? "
            "ORDER BY time DESC, id DESC LIMIT ?",
            (account_key(account), limit),
        )
        return [Evidence(a, t, s, h, k, json.loads(d)) for a, t, s, h, k, d in rows]

    def accounts_per_address(self, addresses: Iterable[str], since: float) -> dict[str, int]:
        """For each address, on how many distinct accounts it failed since ``since`` (a spray shows here)."""
        wanted = sorted({a for a in addresses if a})
        if not wanted:
            return {}
        rows = self._rows_of(
            "SELECT address, COUNT(DISTINCT account) FROM (SELECT account, COALESCE(json_extract(detail, '$.ip'), "
            "json_extract(detail, '$.client_ip')) AS address FROM evidence WHERE time >= ?) "
            "WHERE address IN (SELECT value FROM json_each(?)) GROUP BY address",
            (since, json.dumps(wanted)),
        )
        return {address: int(n) for address, n in rows}

    def evidence_stats(self) -> tuple[int, dict[str, int]]:
        """(rows kept, rows dropped so far by reason); while the database refuses, the last figures read."""
        try:
            dropped = self.get(_DROPPED_KEY, {}) or {}
            self._dropped_cache = {r: int(dropped.get(r, 0)) for r in DROP_REASONS}
        except StateError:
            pass
        with self._lock:
            rows = self._rows
        return rows, {r: self._dropped_cache.get(r, 0) for r in DROP_REASONS}

    def close(self) -> None:
        with self._lock:
            self._db.close()
