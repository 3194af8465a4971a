"""Log files that go wrong under a running exporter, and a storm of SIGHUPs: NUL bytes and binary garbage, a 2 GB
line, a log file replaced by a directory, a log directory whose permissions are taken away and given back. Each time
the exporter keeps serving, counts what it skipped, stays within its memory, and every well-formed line is counted
exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from lab.exchange_logs import LogWriter
from tests.helpers import metric
from tests.integration.conftest import RunningExporter, running_exporter
from tests.integration.test_exchange_logs import counted, truth


def exact(exporter: RunningExporter, writer: LogWriter, timeout: float = 60) -> str:
    expected = truth(writer)
    try:
        return exporter.wait_for(lambda t: counted(t) == expected, timeout=timeout)
    except AssertionError:
        got = counted(exporter.metrics())
        diff = {k: (got.get(k, 0), v) for k, v in (expected | got).items() if got.get(k, 0) != expected.get(k, 0)}
        raise AssertionError(f"counted != written: {diff}\n{exporter.logs()[-3000:]}") from None


# Root reads any directory whatever its mode: without these two capabilities it is held to permissions like any
# service account (the exporter's own files are root's, so it still owns and writes them).
WITHOUT_PERMISSION_BYPASS = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")


@contextmanager
def logging_exporter(
    tmp_path: Path, seed: int, prefix: Sequence[str] = ()
) -> Iterator[tuple[LogWriter, RunningExporter]]:
    """An Exchange server's logs being written, and an exporter that has counted them so far."""
    writer = LogWriter(tmp_path / "logs", seed=seed)
    writer.write(requests=80, sessions=3, messages=6)
    with running_exporter(
        None, tmp_path / "exporter", logs=writer, state=tmp_path / "state.db", interval=1, prefix=prefix
    ) as exporter:
        exact(exporter, writer)
        yield writer, exporter


def status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def test_garbage_and_a_file_replaced_by_a_directory(tmp_path: Path) -> None:
    with logging_exporter(tmp_path, 12) as (writer, exporter):
        # NUL bytes and binary garbage in the middle of two logs, then well-formed lines again.
        for kind in ("iis", "smtp_receive"):
            with writer.path(kind).open("ab") as log:
                log.write(b"\x00" * 300 + b"\n" + os.urandom(4096).replace(b"\n", b"") + b"\n\xff\xfe\x00garbage\r\n")
        writer.write(requests=80, sessions=3, messages=6)
        text = exact(exporter, writer)
        assert (metric(text, "exchange_log_malformed_lines_total", log="iis") or 0) >= 2

        # The send log moved aside (still followed) and a directory put where it was.
        send = writer.path("smtp_send")
        send.rename(send.with_name(send.name + ".1"))
        send.mkdir()
        refreshes = metric(exporter.metrics(), "ad_exchange_exporter_collector_refreshes_total") or 0
        text = exporter.wait_for(
            lambda t: (metric(t, "ad_exchange_exporter_collector_refreshes_total") or 0) >= refreshes + 2
        )
        assert counted(text) == truth(writer)  # the moved file's lines, each once; the directory passed over
        send.rmdir()
        writer._create("smtp_send")
        writer.write(requests=40, sessions=3, messages=6)
        exact(exporter, writer)


def test_a_log_directory_made_unreadable_then_readable_again(tmp_path: Path) -> None:
    with logging_exporter(tmp_path, 14, prefix=WITHOUT_PERMISSION_BYPASS) as (writer, exporter):
        iis = writer.dirs["iis"]
        lines_before = metric(exporter.metrics(), "exchange_log_lines_total", log="iis")
        iis.chmod(0)
        try:
            writer.write(requests=80, sessions=3, messages=6)
            text = exporter.wait_for(lambda t: metric(t, "exchange_log_unreadable_directories", log="iis") == 1)
            assert metric(text, "exchange_log_unreadable_directories", log="smtp_receive") == 0
            refreshes = metric(text, "ad_exchange_exporter_collector_refreshes_total") or 0
            text = exporter.wait_for(
                lambda t: (metric(t, "ad_exchange_exporter_collector_refreshes_total") or 0) >= refreshes + 2
            )
            assert metric(text, "exchange_log_lines_total", log="iis") == lines_before  # waiting, not lost
            assert metric(text, "exchange_log_files", log="iis") == 1  # still followed, not taken for deleted
            assert f"cannot list {iis}: Permission denied" in exporter.page("/")
        finally:
            iis.chmod(0o755)
        writer.write(requests=40, sessions=3, messages=6)
        text = exact(exporter, writer)  # the lines written meanwhile, each once; none of the earlier again
        assert metric(text, "exchange_log_unreadable_directories", log="iis") == 0
        assert exporter.logs().count("Permission denied") == 1  # said once, not at every read


def test_a_2gb_line_is_skipped_within_bounded_memory(tmp_path: Path) -> None:
    with logging_exporter(tmp_path, 14) as (writer, exporter):
        pid = exporter.process.pid
        # A 2 GB line (a sparse file: NULs without a newline), then a newline and more log.
        huge = writer.dirs["iis"] / (writer.names["iis"] + ".huge")
        with huge.open("wb") as handle:
            handle.truncate(2 * 1024**3)
        with huge.open("ab") as handle:
            handle.write(b"\n")
        writer.write(requests=80, sessions=3, messages=6)
        started = time.monotonic()
        exporter.wait_for(lambda t: (metric(t, "exchange_log_overlong_lines_total", log="iis") or 0) >= 1, 120)
        print(f"2 GB line skipped in {time.monotonic() - started:.1f}s")
        exact(exporter, writer)
        rss_kib = status_field(pid, "VmHWM")  # the peak resident size over the whole run
        assert rss_kib < 400 * 1024, f"peak RSS {rss_kib / 1024:.0f} MiB while skipping a 2 GB line"


def test_a_sighup_storm_reloads_one_at_a_time_and_loses_nothing(tmp_path: Path) -> None:
    with logging_exporter(tmp_path, 13) as (writer, exporter):
        pid = exporter.process.pid
        threads = status_field(pid, "Threads")
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        for i in range(100):  # 100 SIGHUPs in about a second, lines arriving meanwhile
            exporter.process.send_signal(signal.SIGHUP)
            if i % 10 == 0:
                writer.write(requests=20, sessions=1, messages=2)
            time.sleep(0.01)
        exporter.wait_for(lambda t: metric(t, "ad_exchange_exporter_config_last_reload_successful") == 1)
        assert exporter.process.poll() is None
        exact(exporter, writer)
        time.sleep(2)  # the reloads behind the last scrape settle
        assert status_field(pid, "Threads") <= threads + 4, (threads, status_field(pid, "Threads"))
        assert len(os.listdir(f"/proc/{pid}/fd")) <= fds + 8
        assert subprocess.run(["kill", "-0", str(pid)]).returncode == 0
