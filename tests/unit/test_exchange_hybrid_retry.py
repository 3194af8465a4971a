"""When the hybrid settings are read again: at their interval after a read, sooner after a failed one (the refresh
interval, doubling with each failure in a row up to the hybrid interval)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.collectors.exchange import ExchangeCollector
from exporter.config import Config
from exporter.sources.credential_guard import CredentialGuard
from exporter.sources.winrm import RemotingError
from tests.golden import ReplayPsrp

REFRESH, HYBRID = 300.0, 900.0


class FlakyHybrid(ReplayPsrp):
    """The recorded Exchange server; Get-RemoteMailbox times out while ``failing``; each call counted."""

    failing = False
    reads = 0

    def run(self, cmdlet: str, parameters: Any = None) -> list[str]:
        if cmdlet == "Get-RemoteMailbox":
            FlakyHybrid.reads += 1
            if FlakyHybrid.failing:
                raise RemotingError("timeout", "Get-RemoteMailbox: no answer within 3s")
        return super().run(cmdlet, parameters)


async def test_a_failed_hybrid_read_is_retried_sooner_and_backs_off_to_its_interval(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("unused")
    config = Config.model_validate(
        {
            "exchange": [
                {
                    "organization": "contoso",
                    "servers": [{"name": "SOLO-E16A"}],
                    "auth": {"method": "basic", "user": "svc", "password_file": str(secret)},
                    "scheme": "https",
                    "interval_seconds": REFRESH,
                    "hybrid": {"tenant_routing_domain": "contoso.mail.onmicrosoft.com", "interval_seconds": HYBRID},
                }
            ]
        }
    )
    now = 1_700_000_000.0
    collector = ExchangeCollector(
        config.exchange[0],
        CredentialGuard(),
        clock=lambda: now,
        client_factory=FlakyHybrid,  # type: ignore[arg-type]
    )

    async def refreshes(count: int) -> list[int]:
        """The hybrid reads at each of ``count`` refreshes, a refresh interval (give or take a second) apart."""
        nonlocal now
        asked = []
        for i in range(count):
            now += REFRESH + (1 if i % 2 else -1)
            before = FlakyHybrid.reads
            await collector.collect()
            asked.append(FlakyHybrid.reads - before)
        return asked

    try:
        await collector.collect()  # the first refresh reads them
        assert FlakyHybrid.reads == 1
        assert await refreshes(6) == [0, 0, 1, 0, 0, 1]  # every 900 s while they answer
        FlakyHybrid.failing = True
        # Failed at 2,700 s... then 300 s later, 600 s after that, then at the hybrid interval.
        assert await refreshes(9) == [0, 0, 1, 1, 0, 1, 0, 0, 1]
        FlakyHybrid.failing = False
        assert await refreshes(4) == [0, 0, 1, 0]  # answered again: back to every 900 s
    finally:
        await collector.close()
