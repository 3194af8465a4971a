"""Wall time as the domain keeps it, so a step of the exporter host's own clock moves no window and no lockout.

Every time the exporter reasons about (lockoutTime + lockoutDuration > now, the observation window, the sliding
windows of events and log lines, retention, patch-day samples) is stamped by the domain: DCs stamp lockouts, Exchange
servers and DCs stamp their logs and events, and all of them take their time from the PDC emulator. So "now" is the
domain's: a DC's rootDSE currentTime, read at each sweep (the PDC emulator's when it answered), carried forward
on the monotonic clock, which a step of the wall clock (a wrong manual set, a VM restored from a snapshot, an NTP
correction) does not move. Before any DC has answered, and in an exporter with no AD collector, it is the host's
own clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Reading:
    """A DC's clock, read once: its time then, the monotonic time then, and the host's wall time then."""

    source: str
    wall: float
    monotonic: float
    host_wall: float

    @property
    def offset(self) -> float:
        """The DC's clock minus the host's, at the reading."""
        return self.wall - self.host_wall


class DomainClock:
    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._reading: Reading | None = None
        self._lock = threading.Lock()  # read from worker threads (state, logs) and set from the event loop

    def read(self, source: str, dc_wall: float, started: float, ended: float) -> Reading:
        """A reading of ``source``'s clock (``dc_wall``), asked between the monotonic instants ``started`` and
        ``ended``: taken at their midpoint. Kept only by ``keep``."""
        at = (started + ended) / 2
        return Reading(source, dc_wall, at, self._wall() - (self._monotonic() - at))

    def keep(self, reading: Reading) -> None:
        """From now on, time is this reading carried forward on the monotonic clock."""
        with self._lock:
            self._reading = reading

    def now(self) -> float:
        with self._lock:
            reading = self._reading
        if reading is None:
            return self._wall()
        return self.carried(reading)

    def carried(self, reading: Reading) -> float:
        """The reading's clock now: its time then, plus the monotonic time since."""
        return reading.wall + (self._monotonic() - reading.monotonic)

    @property
    def reading(self) -> Reading | None:
        with self._lock:
            return self._reading

    def host_offset(self) -> float:
        """Domain time minus the host's wall clock, now (0 while no DC has been read)."""
        return self.now() - self._wall()


DOMAIN_CLOCK = DomainClock()


def now() -> float:
    """The process's domain time: the default clock of every collector, the state database and the pages."""
    return DOMAIN_CLOCK.now()
