"""Exchange logs followed while the lab writer appends and rotates them, through kill -9 and SIGTERM restarts."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from lab.exchange_logs import LogWriter
from tests.helpers import metric, samples
from tests.integration.conftest import running_exporter

# exporter metric -> the writer's truth key (the labels in truth order)
METRICS = {
    "exchange_http_requests_total": ("iis_requests", "protocol", "status"),
    "exchange_http_unauthorized_total": ("iis_unauthorized", "protocol", "substatus", "win32_status"),
    "exchange_smtp_responses_total": ("smtp_responses", "connector", "direction", "code", "enhanced_code"),
    "exchange_smtp_sessions_total": ("smtp_sessions", "connector", "direction"),
    "exchange_smtp_tls_total": ("smtp_tls", "connector", "direction", "outcome"),
    "exchange_smtp_auth_total": ("smtp_auth", "connector", "outcome"),
    "exchange_message_tracking_events_total": ("tracking_events", "event_id", "source", "connector", "directionality"),
    "exchange_message_tracking_failures_total": ("tracking_failures", "event_id", "code", "enhanced_code"),
}


def counted(text: str) -> Counter[tuple[Any, ...]]:
    out: Counter[tuple[Any, ...]] = Counter()
    for (name, labels), value in samples(text_string_to_metric_families(text)).items():
        if name in METRICS:
            key, *names = METRICS[name]
            values = dict(labels)
            out[(key, *(values[n] for n in names))] += int(value)
    return out


def truth(writer: LogWriter) -> Counter[tuple[Any, ...]]:
    return Counter({k: v for k, v in writer.truth.items() if k[0] != "iis_device"})


def test_rotations_kill_9_and_sigterm_lose_nothing_and_count_nothing_twice(tmp_path: Path) -> None:
    rng = random.Random(11)
    writer = LogWriter(tmp_path / "logs", seed=5)
    stop = threading.Event()
    kinds = ["iis", "smtp_receive", "smtp_send", "message_tracking"]

    def write() -> None:
        step = 0
        while not stop.is_set():
            writer.write(requests=60, sessions=3, messages=6)
            step += 1
            if step % 12 == 0:  # rotate one kind, alternating the two styles
                writer.rotate(kinds[(step // 12) % 4], "rename" if (step // 12) % 2 else "copytruncate")
            if step == 30:
                writer.change_iis_fields()
            if step % 20 == 0:
                writer.transport_inactive = not writer.transport_inactive
            time.sleep(0.03)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    state = tmp_path / "state.db"
    options: dict[str, Any] = {"logs": writer, "state": state, "interval": 1}
    kills = 0
    try:
        for run in range(5):
            with running_exporter(None, tmp_path / f"run{run}", **options) as exporter:
                exporter.wait_for(lambda t: (metric(t, "exchange_log_lines_total", log="iis") or 0) > 0)
                time.sleep(rng.uniform(0.3, 2.5))  # then stop it wherever it is: reading, counting, committing
                exporter.process.send_signal(signal.SIGKILL if run % 2 == 0 else signal.SIGTERM)
                exporter.process.wait(10)
                kills += 1
    finally:
        stop.set()
        thread.join(10)
    with running_exporter(None, tmp_path / "final", **options) as exporter:
        expected = truth(writer)
        text = exporter.wait_for(lambda t: counted(t) == expected, timeout=60)
        assert metric(text, "exchange_log_truncations_total", log="iis") is not None
        rotations = sum(int(metric(text, "exchange_log_files", log=k) or 0) for k in kinds)
    assert kills == 5
    assert rotations > 4  # the rotated files are followed too
    assert expected[("smtp_responses", "EX1\\Default Frontend EX1", "receive", "421", "4.3.2")] > 0
    assert expected[("iis_unauthorized", "activesync", "1", "1909")] > 0
