"""Grafana dashboards as code. ``python -m dashboards.build`` writes the JSON next to this file.

Each dashboard is built in its own module from the panel helpers in ``panels``; a test fails when the committed
JSON differs from what this builds, and another runs every expression against a real Prometheus scraping the
exporter.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dashboards.ad_lockouts import ad_lockouts
from dashboards.ad_security_events import ad_security_events
from dashboards.directaccess import directaccess
from dashboards.exchange_health import exchange_health
from dashboards.exchange_logs import exchange_logs
from dashboards.exchange_patch_days import exchange_patch_days
from dashboards.hybrid_mail import hybrid_mail

HERE = Path(__file__).resolve().parent

DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "ad-lockouts.json": ad_lockouts,
    "ad-security-events.json": ad_security_events,
    "directaccess.json": directaccess,
    "exchange-health.json": exchange_health,
    "exchange-logs.json": exchange_logs,
    "exchange-patch-days.json": exchange_patch_days,
    "hybrid-mail.json": hybrid_mail,
}


def render(build: Callable[[], dict[str, Any]]) -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    for name, build in DASHBOARDS.items():
        (HERE / name).write_text(render(build))
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
