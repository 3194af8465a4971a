"""Benchmarks, run on demand (not part of the tests): ``python -m bench [NAME] [ARGS...]``."""

from __future__ import annotations

import sys

from bench import (
    exchange,
    fuzz,
    iis_logs,
    investigate,
    ldap_sweep,
    remoting,
    scrape_load,
    secured_scrape,
    security_events,
    smtp_probe,
    soak,
)

BENCHMARKS = {
    "ldap_sweep": ldap_sweep.main,
    "security_events": security_events.main,
    "iis_logs": iis_logs.main,
    "smtp_probe": smtp_probe.main,
    "secured_scrape": secured_scrape.main,
    "scrape_load": scrape_load.main,
    "investigate": investigate.main,
    "exchange": exchange.main,
    "remoting": remoting.main,
    "fuzz": fuzz.main,
    "soak": soak.main,
}


def main() -> int:
    args = sys.argv[1:]
    name = args[0] if args and not args[0].startswith("-") else "ldap_sweep"
    rest = args[1:] if args and args[0] == name else args
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    return BENCHMARKS[name](rest)


raise SystemExit(main())
