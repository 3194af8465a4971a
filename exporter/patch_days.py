"""The patch-day report: for each build change of an Exchange server, what broke and whether it still is.

A recorder samples, every ``state.patch_days.sample_interval_seconds``, what is wrong with each Exchange server (the
Exchange collector's facts: components Inactive and who holds them, health sets Unhealthy, required services not
running, database copies not healthy, failed content indexes, activation blocked, back pressure, Emergency
Mitigation off, queued messages) and the counters that users feel (401s and 421s from the server's logs, the
Anonymous share of hybrid mail), and keeps the samples and the build changes in the state database, bounded by age.
The report compares, for each change, the server as it was before the update began with every sample since (until
the next change) and with the newest: "broke, still broken", "broke, fixed since", "broken before the change". It
never asks a server anything: it reads what the collectors already hold.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric

from exporter.config.web import PatchDaysConfig
from exporter.state import StateStore

log = logging.getLogger(__name__)

# What is wrong, by check: each a set of items (a component and its holder, a health set, a service ...).
CHECKS = {
    "components_inactive": "Components Inactive (held by)",
    "health_sets_unhealthy": "Health sets Unhealthy",
    "services_not_running": "Required services not running",
    "database_copies_not_healthy": "Database copies not healthy",
    "content_index_failed": "Content indexes failed",
    "activation_blocked": "Database activation blocked",
    "back_pressure": "Transport back pressure",
    "emergency_mitigation_off": "Emergency Mitigation off",
}
# Counters per server (and the organisation's hybrid mail): compared as rates per hour.
RATES = {
    "http_401": "IIS 401s per hour",
    "smtp_421": "SMTP 421 answers per hour",
}
MAX_ITEMS = 50  # per check and sample: a server with more problems than this has bigger news
# Where the counters come from: (family, label that names the server, the samples counted).
LOG_COUNTERS: tuple[tuple[str, str, str, Callable[[Mapping[str, str]], bool]], ...] = (
    ("http_401", "exchange_http_unauthorized", "server", lambda labels: True),
    ("smtp_421", "exchange_smtp_responses", "server", lambda labels: labels.get("code") == "421"),
)


@dataclass(frozen=True)
class Facts:
    """One server at one time."""

    build: str
    problems: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    values: Mapping[str, float] = field(default_factory=dict)  # queued_messages; counters http_401, smtp_421, ...

    def to_json(self) -> dict[str, Any]:
        return {"build": self.build, "problems": {k: list(v) for k, v in self.problems.items()}, "values": self.values}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Facts:
        return Facts(
            build=str(data.get("build", "")),
            problems={k: tuple(v) for k, v in dict(data.get("problems", {})).items()},
            values={k: float(v) for k, v in dict(data.get("values", {})).items()},
        )


@dataclass(frozen=True)
class Sample:
    at: float
    facts: Facts


@dataclass(frozen=True)
class Change:
    server: str
    at: float
    old: str
    new: str


def _state(before: bool, after: bool, now: bool) -> str:
    if after and not before:
        return "broke, still broken" if now else "broke, fixed since"
    if before:
        return "broken before the change, still broken" if now else "broken before the change, fixed since"
    return "broken since, still broken" if now else "fine"


def _rate(samples: Sequence[Sample], key: str) -> float | None:
    """Increase per hour over the samples (counter resets count as restarts from 0)."""
    points = [(s.at, s.facts.values[key]) for s in samples if key in s.facts.values]
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None
    increase = 0.0
    for (_, a), (_, b) in itertools.pairwise(points):
        increase += b - a if b >= a else b
    return increase / (points[-1][0] - points[0][0]) * 3600


def _share(samples: Sequence[Sample]) -> float | None:
    """Anonymous / all of the hybrid mail that arrived over the samples."""
    anonymous, total = _rate(samples, "inbound_anonymous"), _rate(samples, "inbound_total")
    return anonymous / total if anonymous is not None and total else None


def _mean(samples: Sequence[Sample], key: str) -> float | None:
    values = [s.facts.values[key] for s in samples if key in s.facts.values]
    return sum(values) / len(values) if values else None


def report(
    changes: Sequence[Change],
    samples: Mapping[str, Sequence[Sample]],
    before_seconds: float,
    recent_seconds: float,
    install_seconds: float = 3600.0,
) -> list[dict[str, Any]]:
    """Every change, newest first, with each problem's before / since / now and the rates around it.

    "Before" is the server as it was ``install_seconds`` before the new build showed (setup stops services and
    takes components offline while it runs, and the build changes only at its end), or the oldest sample kept if
    none is that old."""
    out = []
    for change in sorted(changes, key=lambda c: (-c.at, c.server)):
        history = sorted(samples.get(change.server, ()), key=lambda s: s.at)
        later = [c.at for c in changes if c.server == change.server and c.at > change.at]
        until = min(later) if later else float("inf")
        before = [s for s in history if change.at - before_seconds <= s.at < change.at]
        since = [s for s in history if change.at <= s.at < until]
        latest = history[-1] if history else None
        recent = [s for s in history if latest is not None and s.at >= latest.at - recent_seconds]
        settled = [s for s in before if s.at <= change.at - install_seconds]
        last_before = settled[-1].facts if settled else (before[0].facts if before else None)
        checks: list[dict[str, Any]] = []
        for key, title in CHECKS.items():
            was = set(last_before.problems.get(key, ())) if last_before else set()
            after = {i for s in since for i in s.facts.problems.get(key, ())}
            now = set(latest.facts.problems.get(key, ())) if latest else set()
            items = [
                {
                    "item": item,
                    "before": item in was,
                    "since": item in after,
                    "now": item in now,
                    "state": _state(item in was, item in after, item in now),
                }
                for item in sorted(was | after | now)
            ]
            checks.append({"check": key, "title": title, "items": items})
        rates: list[dict[str, Any]] = [
            {
                "rate": key,
                "title": title,
                "before": _rate(before, key),
                "since": _rate(since, key),
                "now": _rate(recent, key),
            }
            for key, title in RATES.items()
        ]
        rates.append(
            {
                "rate": "inbound_anonymous_share",
                "title": "Anonymous share of hybrid mail",
                "before": _share(before),
                "since": _share(since),
                "now": _share(recent),
            }
        )
        rates.append(
            {
                "rate": "queued_messages",
                "title": "Messages queued (mean)",
                "before": _mean(before, "queued_messages"),
                "since": _mean(since, "queued_messages"),
                "now": latest.facts.values.get("queued_messages") if latest else None,
            }
        )
        broke = [i for c in checks for i in c["items"] if i["since"] and not i["before"]]
        out.append(
            {
                "server": change.server,
                "at": change.at,
                "from": change.old,
                "to": change.new,
                "samples_before": len(before),
                "samples_since": len(since),
                "broke": len(broke),
                "still_broken": sum(i["now"] for i in broke),
                "checks": checks,
                "rates": rates,
            }
        )
    return out


class PatchDayRecorder:
    """Samples the collectors' facts into the state database and notices build changes."""

    def __init__(
        self,
        state: StateStore,
        facts: Callable[[], Mapping[str, Facts]],
        interval: float,
        retention: float,
        max_changes: int,
        clock: Callable[[], float],
    ) -> None:
        self.state = state
        self.facts = facts
        self.interval = interval
        self.retention = retention
        self.max_changes = max_changes
        self.clock = clock

    def sample(self) -> list[Change]:
        """One sample of every server (stored); returns the build changes it noticed."""
        now = self.clock()
        found = []
        for server, facts in sorted(self.facts().items()):
            if not facts.build:
                continue  # not answered yet: nothing to compare
            known = self.state.get(f"patch_days/build/{server}")
            if known is not None and known != facts.build:
                found.append(Change(server, now, str(known), facts.build))
                log.warning("exchange server %s: build changed from %s to %s", server, known, facts.build)
            self.state.record_patch_day_sample(
                server,
                now,
                facts.to_json(),
                [(c.at, c.old, c.new) for c in found if c.server == server],
                keep_seconds=self.retention,
                max_changes=self.max_changes,
            )
            if known != facts.build:
                self.state.put_many({f"patch_days/build/{server}": facts.build})
        return found

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.sample)
            except Exception:  # one bad sample must not end the recorder; the log says why
                log.exception("patch-day sample failed")
            await asyncio.sleep(self.interval)


class PatchDays:
    """What the web pages ask: the report, computed off the event loop from the state database."""

    def __init__(self, state: StateStore, settings: Callable[[], PatchDaysConfig], clock: Callable[[], float]) -> None:
        self.state = state
        self.settings = settings
        self.clock = clock

    def _report(self) -> list[dict[str, Any]]:
        settings = self.settings()
        changes, samples = changes_and_samples(self.state, self.clock() - settings.retention_seconds)
        return report(changes, samples, settings.before_seconds, settings.recent_seconds, settings.install_seconds)

    async def report(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._report)


def changes_and_samples(state: StateStore, since: float) -> tuple[list[Change], dict[str, list[Sample]]]:
    changes = [Change(server, at, old, new) for server, at, old, new in state.patch_day_changes()]
    samples: dict[str, list[Sample]] = {}
    for server, at, data in state.patch_day_samples(since):
        samples.setdefault(server, []).append(Sample(at, Facts.from_json(data)))
    return changes, samples


def with_counters(facts: Mapping[str, Facts], snapshots: Iterable[Sequence[Metric]]) -> dict[str, Facts]:
    """The servers' facts with the counters users feel, from the other collectors' last snapshots: 401s and 421s
    from each server's logs (by its server label), and the organisation's hybrid mail by AuthAs (on every server)."""
    counters: dict[str, dict[str, float]] = {server: {} for server in facts}
    anonymous = total = 0.0
    for snapshot in snapshots:
        for family in snapshot:
            for key, name, label, wanted in LOG_COUNTERS:
                if family.name != name:
                    continue
                for sample in family.samples:
                    server = sample.labels.get(label, "").lower()
                    if server in counters and sample.name.endswith("_total") and wanted(sample.labels):
                        counters[server][key] = counters[server].get(key, 0.0) + sample.value
            if family.name == "exchange_inbound_messages":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        total += sample.value
                        anonymous += sample.value if sample.labels.get("auth_as") == "Anonymous" else 0.0
    out = {}
    for server, f in facts.items():
        values = {**f.values, **counters[server]}
        if total:
            values.update(inbound_total=total, inbound_anonymous=anonymous)
        out[server] = Facts(f.build, f.problems, values)
    return out


def bounded(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(items)))[:MAX_ITEMS]
