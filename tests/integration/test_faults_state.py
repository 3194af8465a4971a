"""The state database failing under a running exporter: locked by another process, then its file system full.
Each time the exporter keeps serving, says which fault it is, and once the fault clears counts every log line
exactly once. A read-only file system or a damaged file at start stops it with a message that names the file and
the fault; started again once the file system is writable, it goes on from its last commit without loss.

A file system that goes read-only under the running exporter is shown the way it happens in the field: an ext4
mounted errors=remount-ro hits an error (the kernel's own trigger_fs_error), and every write after is refused with
EROFS. (A tmpfs cannot be remounted read-only under files open for writing.)

The state directory is a small tmpfs or loop-mounted ext4 of the test's own (mount needs root, as the lab does)."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lab.exchange_logs import LogWriter
from tests.helpers import metric
from tests.integration.conftest import RunningExporter, running_exporter
from tests.integration.test_exchange_logs import counted, truth

TMPFS_BYTES = 8 * 1024 * 1024


@contextmanager
def tmpfs(directory: Path, size: int = TMPFS_BYTES) -> Iterator[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


@contextmanager
def ext4(directory: Path, image: Path) -> Iterator[Path]:
    """The ext4 in ``image`` (made if there is none) on a loop device, mounted as servers mount theirs:
    read-only on the first error."""
    if not image.exists():
        subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(directory)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount an ext4 here: {mounted.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=False, capture_output=True)


def fail_file_system(directory: Path) -> None:
    """An ext4 error on the file system of ``directory``: errors=remount-ro makes it read-only at once."""
    device = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE", str(directory)], capture_output=True, text=True, check=True
    ).stdout.strip()
    trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
    if not trigger.exists():
        pytest.skip(f"this kernel has no {trigger}")
    trigger.write_text("the state database test's own error")


def remount(directory: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(directory)], check=True)


HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


def state_errors(text: str, reason: str) -> float:
    return metric(text, "ad_exchange_exporter_state_errors_total", reason=reason) or 0.0


def serving_through(exporter: RunningExporter, writer: LogWriter, reason: str) -> None:
    """While the fault holds: lines keep arriving, scrapes keep answering, the fault is named."""
    writer.write(requests=40, sessions=2, messages=4)
    text = exporter.wait_for(lambda t: state_errors(t, reason) >= 1, timeout=30)
    assert metric(text, "ad_exchange_exporter_state_healthy") == 0
    writer.write(requests=40, sessions=2, messages=4)
    page = exporter.page("/")
    assert "state database" in page and reason in page  # the target's detail on the landing page
    assert exporter.metrics()  # still serving


def recovered(exporter: RunningExporter, writer: LogWriter) -> None:
    expected = truth(writer)
    text = exporter.wait_for(lambda t: counted(t) == expected, timeout=60)
    assert metric(text, "ad_exchange_exporter_state_healthy") == 1


def test_locked_and_full_then_exact_counts(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "logs", seed=9)
    writer.write(requests=50, sessions=3, messages=5)
    with tmpfs(tmp_path / "state") as directory:
        state = directory / "state.db"
        with running_exporter(None, tmp_path / "exporter", logs=writer, state=state, interval=1) as exporter:
            recovered(exporter, writer)

            holder = subprocess.Popen(
                [sys.executable, "-c", HOLD_LOCK, str(state)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            assert holder.stdout is not None and holder.stdin is not None
            assert holder.stdout.readline().strip() == "locked"
            serving_through(exporter, writer, "locked")
            holder.stdin.write("\n")
            holder.stdin.close()
            holder.wait(10)
            recovered(exporter, writer)

            filler = directory / "filler"
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)
            serving_through(exporter, writer, "disk_full")
            filler.unlink()
            recovered(exporter, writer)
            logs = exporter.logs()
    assert "state database" in logs and "locked" in logs and "disk_full" in logs


def test_a_damaged_state_file_stops_the_start_with_its_name_and_fault(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with running_exporter(None, tmp_path / "first", state=state, interval=1):
        pass
    data = bytearray(state.read_bytes())
    data[100:4096] = b"\xa5" * (4096 - 100)  # the schema page overwritten
    state.write_bytes(bytes(data))
    for extra in tmp_path.glob("state.db-*"):
        extra.unlink()
    config = tmp_path / "first" / "exporter.yml"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={config}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert str(state) in result.stderr and "corrupt" in result.stderr, result.stderr
    assert "move it aside" in result.stderr
    assert time.monotonic() - started < 30


def test_a_read_only_state_directory_at_start_then_writable_again(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "logs", seed=10)
    writer.write(requests=50, sessions=3, messages=5)
    with tmpfs(tmp_path / "state") as directory:
        state = directory / "state.db"
        options: dict[str, Any] = {"logs": writer, "state": state, "interval": 1}
        with running_exporter(None, tmp_path / "first", **options) as exporter:
            recovered(exporter, writer)
        writer.write(requests=50, sessions=3, messages=5)  # lines the next start owes
        for extra in directory.glob("state.db-*"):
            extra.unlink()
        remount(directory, "ro")
        try:
            config = tmp_path / "first" / "exporter.yml"
            result = subprocess.run(
                [sys.executable, "-m", "exporter", f"--config.file={config}"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            remount(directory, "rw")
        assert result.returncode == 1
        assert str(state) in result.stderr and "read_only" in result.stderr, result.stderr
        with running_exporter(None, tmp_path / "again", **options) as exporter:
            recovered(exporter, writer)  # the first run's counts and the lines since, each once


def test_a_file_system_gone_read_only_under_the_exporter_then_repaired(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "logs", seed=11)
    writer.write(requests=50, sessions=3, messages=5)
    image, directory = tmp_path / "state.img", tmp_path / "state"
    options: dict[str, Any] = {"logs": writer, "state": directory / "state.db", "interval": 1}
    with ext4(directory, image):
        with running_exporter(None, tmp_path / "first", **options) as exporter:
            recovered(exporter, writer)
            fail_file_system(directory)
            serving_through(exporter, writer, "read_only")
            assert state_errors(exporter.metrics(), "io_error") == 0  # named for what it is, not a bare I/O error
            logs = exporter.logs()
        assert "read_only" in logs
    # What an admin does: unmount, repair, mount again, start the exporter. Lines read while the file system was
    # read-only were never committed, so they are read again; the counts are exact.
    repaired = subprocess.run(["e2fsck", "-f", "-y", str(image)], capture_output=True, text=True)
    assert repaired.returncode in (0, 1), repaired.stdout + repaired.stderr  # 1: errors corrected
    writer.write(requests=50, sessions=3, messages=5)
    with ext4(directory, image), running_exporter(None, tmp_path / "again", **options) as exporter:
        recovered(exporter, writer)


def test_sigterm_in_the_middle_of_a_write_then_restart_counts_exact(tmp_path: Path) -> None:
    """Another process holds the database's lock, so each of the exporter's writes waits inside its transaction
    (up to the busy timeout): SIGTERM then, until one lands in the middle of a write (the exporter says so as it
    stops). It stops within the wait, the write ends whole, and a restart once the lock is gone counts exactly."""
    writer = LogWriter(tmp_path / "logs", seed=15)
    writer.write(requests=50, sessions=3, messages=5)
    state = tmp_path / "state.db"
    options: dict[str, Any] = {"logs": writer, "state": state, "interval": 1}
    with running_exporter(None, tmp_path / "first", **options) as exporter:
        recovered(exporter, writer)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(state)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "locked"
    landed, stops, rng = 0, [], random.Random(16)
    try:
        for attempt in range(12):
            writer.write(requests=30, sessions=2, messages=3)
            with running_exporter(None, tmp_path / f"stopped{attempt}", **options) as exporter:
                exporter.wait_for(lambda t: state_errors(t, "locked") >= 1, timeout=30)
                # Writes now wait 2 s on the lock, back to back a second apart: SIGTERM somewhere in that cycle.
                time.sleep(rng.uniform(0, 2.5))
                started = time.monotonic()
                exporter.process.terminate()
                exporter.process.wait(15)
                stops.append(time.monotonic() - started)
                assert exporter.process.returncode == 0, exporter.logs()
                if "a state database write is in flight" in exporter.logs():
                    landed += 1
                    if landed == 2:
                        break
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(10)
    print(
        f"{len(stops)} SIGTERMs, {landed} in the middle of a write; stopped in {', '.join(f'{t:.2f}' for t in stops)} s"
    )
    assert landed >= 1, "no SIGTERM landed in a write in 12 tries"
    assert max(stops) < 5  # the 2 s wait for the lock, then the exit
    with running_exporter(None, tmp_path / "again", **options) as exporter:
        recovered(exporter, writer)  # every line written across the stops, each once
