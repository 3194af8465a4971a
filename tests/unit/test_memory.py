"""The glibc malloc settings the exporter applies at start (exporter/memory.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


@glibc
def test_arenas_limited_in_a_fresh_process_unless_the_environment_says() -> None:
    code = "from exporter import memory; print(memory.limit_arenas())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**env, "MALLOC_ARENA_MAX": "4"}, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"  # the operator's own setting is left alone


_FREED_IN_A_THREAD = """
import threading

from exporter import memory

def rss_mib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024

kept = []

def work():
    blocks = [bytearray(2000) for _ in range(50_000)]  # ~100 MiB in malloc blocks (past pymalloc's 512 bytes)
    kept.append(bytearray(2000))  # one block after the freed ones: the heap cannot shrink from its top
    del blocks

thread = threading.Thread(target=work)
thread.start()
thread.join()
before = rss_mib()
memory.trim()
print(before, rss_mib())
"""


@glibc
def test_trim_hands_back_what_a_refresh_thread_freed() -> None:
    out = subprocess.run([sys.executable, "-c", _FREED_IN_A_THREAD], capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split())
    assert before - after >= 50, (before, after)
