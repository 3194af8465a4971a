"""The guard that keeps the exporter from locking out its own account."""

from __future__ import annotations

import threading
import time

from exporter.sources.credential_guard import CredentialGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refused_credential_is_held_back_until_the_back_off_passes() -> None:
    clock = Clock()
    guard = CredentialGuard(clock)
    fp = CredentialGuard.fingerprint("corp.example", "simple", "svc", "wrong")
    assert guard.refusal(fp) is None
    guard.refused(fp, "wrong_password", retry_after=1860)
    clock.now += 1859
    refusal = guard.refusal(fp)
    assert refusal is not None and refusal.reason == "wrong_password"
    clock.now += 2
    assert guard.refusal(fp) is None


def test_a_changed_secret_is_a_new_credential() -> None:
    guard = CredentialGuard(Clock())
    old = CredentialGuard.fingerprint("corp.example", "simple", "svc", "wrong")
    new = CredentialGuard.fingerprint("corp.example", "simple", "svc", "right")
    guard.refused(old, "wrong_password", 1860)
    assert guard.refusal(new) is None
    assert "wrong" not in old and len(old) == 64


def test_unproven_credentials_bind_one_at_a_time_proven_ones_in_parallel() -> None:
    guard = CredentialGuard()
    fp = "fp"
    inside = 0
    most = 0
    lock = threading.Lock()

    def bind() -> None:
        nonlocal inside, most
        with guard.attempt(fp):
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.05)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=bind) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1
    guard.succeeded(fp)
    most = 0
    threads = [threading.Thread(target=bind) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most > 1
    assert guard.attempts[fp] == 8
