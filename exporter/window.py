"""Counts over a sliding window, for bounded "top N" tables (sources, users, devices)."""

from __future__ import annotations


class SourceWindow:
    """Failed events per source over a sliding window, in one-minute buckets: counts and distinct accounts.

    Memory is bounded by the distinct (source, account) pairs seen per minute within the window.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._buckets: dict[int, dict[tuple[str, str], tuple[int, set[str]]]] = {}

    def add(self, when: float, kind: str, source: str, user: str, n: int = 1) -> None:
        bucket = self._buckets.setdefault(int(when // 60), {})
        count, users = bucket.get((kind, source), (0, set()))
        if user:
            users.add(user)
        bucket[(kind, source)] = (count + n, users)

    def prune(self, now: float) -> None:
        oldest = int((now - self.window) // 60)
        for minute in [m for m in self._buckets if m < oldest]:
            del self._buckets[minute]

    def totals(self, kind: str) -> dict[str, tuple[int, set[str]]]:
        out: dict[str, tuple[int, set[str]]] = {}
        for bucket in self._buckets.values():
            for (k, source), (count, users) in bucket.items():
                if k == kind:
                    total, seen = out.get(source, (0, set()))
                    out[source] = (total + count, seen | users)
        return out
