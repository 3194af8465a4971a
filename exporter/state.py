"""State that must survive restarts: event bookmarks, log checkpoints and the counters they feed.

One SQLite file. A collector writes a bookmark (or a file offset) and the counters that the events up to it
added in one transaction, so after a crash either both are stored or neither: nothing is counted twice and
nothing is lost. Without a path the state lives in memory and starts afresh with each process.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class StateStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None, check_same_thread=False)
        if path is not None:
            # WAL with full sync: a committed transaction survives a crash or a power cut.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def put_many(self, values: Mapping[str, Any]) -> None:
        """Store every key in one transaction."""
        with self.transaction() as put:
            for key, value in values.items():
                put(key, value)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """Yields ``put(key, value)``; everything put is committed together, or not at all on an exception."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:

                def put(key: str, value: Any) -> None:
                    self._db.execute(
                        "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                        "value = excluded.value",
                        (key, json.dumps(value, sort_keys=True)),
                    )

                yield put
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
