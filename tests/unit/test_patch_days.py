"""The patch-day report: what a build change broke and whether it still is, from stored samples."""

from __future__ import annotations

from collections.abc import Sequence

from exporter.collectors.exchange_logs import EXCHANGE_HTTP_UNAUTHORIZED_TOTAL, EXCHANGE_SMTP_RESPONSES_TOTAL
from exporter.collectors.hybrid_mail import EXCHANGE_INBOUND_MESSAGES_TOTAL
from exporter.patch_days import Facts, PatchDayRecorder, changes_and_samples, report, with_counters
from exporter.state import StateStore

OLD, NEW = "15.2.986.42", "15.2.1118.7"


def facts(build: str, at: float, **problems: tuple[str, ...]) -> Facts:
    # 401s grow by 60 an hour before the update and by 600 an hour after it.
    http_401 = 60 * at / 3600 if at < 7200 else 120 + 600 * (at - 7200) / 3600
    return Facts(build, problems, {"http_401": http_401, "queued_messages": 3.0})


def recorded(timeline: Sequence[tuple[float, Facts]]) -> StateStore:
    state = StateStore(None)
    now = [0.0]
    current: dict[str, Facts] = {}
    recorder = PatchDayRecorder(state, lambda: current, 60, 30 * 86400, 50, lambda: now[0])
    for at, f in timeline:
        now[0], current["ex1"] = at, f
        recorder.sample()
    return state


def test_what_broke_what_was_fixed_and_what_was_broken_before() -> None:
    timeline = [
        (t, facts(OLD, t, components_inactive=("Monitoring (held by HealthApi)",))) for t in range(0, 7200, 600)
    ]
    broken = {
        "components_inactive": ("Monitoring (held by HealthApi)", "ServerWideOffline (held by Functional)"),
        "database_copies_not_healthy": ("DB02: Suspended",),
    }
    timeline += [(t, facts(NEW, t, **broken)) for t in range(7200, 9000, 600)]
    # The admin's fix: ServerWideOffline back; the copy still suspended; the HealthApi hold lifted too.
    timeline += [(t, facts(NEW, t, database_copies_not_healthy=("DB02: Suspended",))) for t in range(9000, 10800, 600)]
    state = recorded(timeline)
    changes, samples = changes_and_samples(state, 0)
    assert [(c.server, c.at, c.old, c.new) for c in changes] == [("ex1", 7200, OLD, NEW)]
    [change] = report(changes, samples, before_seconds=6 * 3600, recent_seconds=1800)
    assert (change["from"], change["to"], change["samples_before"], change["samples_since"]) == (OLD, NEW, 12, 6)
    states = {(c["check"], i["item"]): i["state"] for c in change["checks"] for i in c["items"]}
    assert states == {
        ("components_inactive", "Monitoring (held by HealthApi)"): "broken before the change, fixed since",
        ("components_inactive", "ServerWideOffline (held by Functional)"): "broke, fixed since",
        ("database_copies_not_healthy", "DB02: Suspended"): "broke, still broken",
    }
    assert (change["broke"], change["still_broken"]) == (2, 1)
    rates = {r["rate"]: r for r in change["rates"]}
    assert round(rates["http_401"]["before"]) == 60 and round(rates["http_401"]["since"]) == 600
    assert rates["smtp_421"]["before"] is None  # no such counter: no data, not zero
    assert rates["queued_messages"]["now"] == 3.0


def test_no_change_no_report_and_the_first_build_is_not_a_change() -> None:
    state = recorded([(t, facts(OLD, t)) for t in range(0, 3600, 600)])
    changes, samples = changes_and_samples(state, 0)
    assert changes == [] and report(changes, samples, 3600, 900) == []
    assert len(samples["ex1"]) == 6


def test_samples_and_changes_are_bounded() -> None:
    state = StateStore(None)
    now = [0.0]
    builds = {"ex1": Facts(OLD)}
    recorder = PatchDayRecorder(state, lambda: builds, 60, retention=3600, max_changes=3, clock=lambda: now[0])
    for i in range(10):
        now[0] = i * 1000.0
        builds["ex1"] = Facts(f"15.2.986.{i}")
        recorder.sample()
    changes, samples = changes_and_samples(state, 0)
    assert [c.new for c in changes] == ["15.2.986.7", "15.2.986.8", "15.2.986.9"]
    assert [s.at for s in samples["ex1"]] == [6000.0, 7000.0, 8000.0, 9000.0]


def test_counters_come_from_the_logs_and_hybrid_mail_snapshots() -> None:
    http = EXCHANGE_HTTP_UNAUTHORIZED_TOTAL.new()
    http.add_metric(["solo-e19a", "activesync", "0", "1326", "wrong_password"], 7)
    http.add_metric(["solo-e19a", "owa", "0", "1909", "locked_out"], 3)
    http.add_metric(["other", "owa", "0", "1909", "locked_out"], 100)
    labels = EXCHANGE_SMTP_RESPONSES_TOTAL.labels
    smtp = EXCHANGE_SMTP_RESPONSES_TOTAL.new()
    for code, n in (("421", 5.0), ("250", 90.0)):
        values = {"server": "solo-e19a", "code": code}
        smtp.add_metric([values.get(name, "x") for name in labels], n)
    inbound = EXCHANGE_INBOUND_MESSAGES_TOTAL.new()
    inbound.add_metric(["onprem-to-exo", "HybridOnPrem", "ex1", "Internal"], 30)
    inbound.add_metric(["onprem-to-exo", "Internet", "exchange_online", "Anonymous"], 10)
    out = with_counters({"solo-e19a": Facts(NEW)}, [[http, smtp], [inbound]])
    assert out["solo-e19a"].values == {"http_401": 10, "smtp_421": 5, "inbound_total": 40, "inbound_anonymous": 10}
