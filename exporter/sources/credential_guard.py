"""Keeps the exporter from locking out its own service account.

Every refused bind counts against the domain's lockout threshold, on the DC that refused it and (on
Windows) on the PDC emulator it is forwarded to. So once a credential is refused for bad credentials it
is not offered to any DC again until the configuration changes (a new fingerprint) or a back-off longer
than the observation window has passed. Until a credential has bound once, its binds are serialised, so
that many DCs polled at once cannot spend several attempts at the same moment.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from exporter import clock as domain_time


@dataclass(frozen=True)
class Refusal:
    reason: str
    at: float
    retry_at: float


class CredentialGuard:
    def __init__(self, clock: Callable[[], float] = domain_time.now) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._refused: dict[str, Refusal] = {}
        self._proven: set[str] = set()
        self._trial_locks: dict[str, threading.Lock] = {}
        self.attempts: dict[str, int] = {}

    @staticmethod
    def fingerprint(*parts: str) -> str:
        """A digest naming a credential; the secret itself is never kept here."""
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part.encode("utf-8"))
            digest.update(b"\x00")
        return digest.hexdigest()

    def refusal(self, fingerprint: str) -> Refusal | None:
        with self._lock:
            refusal = self._refused.get(fingerprint)
            if refusal is not None and self._clock() >= refusal.retry_at:
                del self._refused[fingerprint]
                return None
            return refusal

    @contextmanager
    def attempt(self, fingerprint: str) -> Iterator[None]:
        """Hold this around a bind. Binds of a credential not yet proven good run one at a time."""
        with self._lock:
            proven = fingerprint in self._proven
            trial = self._trial_locks.setdefault(fingerprint, threading.Lock())
            self.attempts[fingerprint] = self.attempts.get(fingerprint, 0) + 1
        if proven:
            yield
            return
        with trial:
            yield

    def proven(self, fingerprint: str) -> bool:
        """The credential has been accepted since it was last refused."""
        with self._lock:
            return fingerprint in self._proven

    def refused(self, fingerprint: str, reason: str, retry_after: float) -> Refusal:
        now = self._clock()
        refusal = Refusal(reason, now, now + retry_after)
        with self._lock:
            self._refused[fingerprint] = refusal
            self._proven.discard(fingerprint)
        return refusal

    def succeeded(self, fingerprint: str) -> None:
        with self._lock:
            self._proven.add(fingerprint)
            self._refused.pop(fingerprint, None)
