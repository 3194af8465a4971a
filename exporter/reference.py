"""The README's metric tables, generated from the collectors' declarations.

``python -m exporter.reference --write`` rewrites every table between its ``<!-- metrics:NAME -->`` and
``<!-- /metrics:NAME -->`` markers in README.md; ``--check`` exits 1 when the README has drifted (a test runs it).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from exporter.cli import (
    CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP,
    CONFIG_LAST_RELOAD_SUCCESSFUL,
    EVIDENCE_DROPPED_TOTAL,
    EVIDENCE_ROWS,
    HOST_CLOCK_OFFSET,
    STATE_ERRORS_TOTAL,
    STATE_HEALTHY,
)
from exporter.collectors.active_directory import ActiveDirectoryCollector
from exporter.collectors.canary import CanaryCollector
from exporter.collectors.directaccess import DirectAccessCollector
from exporter.collectors.exchange import ExchangeCollector
from exporter.collectors.exchange_logs import ExchangeLogsCollector
from exporter.collectors.hybrid_mail import HybridMailCollector
from exporter.collectors.security_events import SecurityEventsCollector
from exporter.collectors.smtp_probe import PROBE_FAMILIES, ScheduledProbesCollector
from exporter.metrics import CAPPED_SERIES, PARSE_ERRORS, Family
from exporter.registry import SELF_FAMILIES
from exporter.web_server import CONNECTIONS, CONNECTIONS_CLOSED_TOTAL

SHARED = (CAPPED_SERIES, PARSE_ERRORS)
SECTIONS: dict[str, tuple[Family, ...]] = {
    "active_directory": ActiveDirectoryCollector.families,
    "exchange": ExchangeCollector.families,
    "security_events": SecurityEventsCollector.families,
    "exchange_logs": ExchangeLogsCollector.families,
    "hybrid_mail": HybridMailCollector.families,
    "canary": CanaryCollector.families,
    "probe": PROBE_FAMILIES,
    "scheduled_probes": ScheduledProbesCollector.families,
    "directaccess": DirectAccessCollector.families,
    "exporter": (
        *SELF_FAMILIES,
        *SHARED,
        CONFIG_LAST_RELOAD_SUCCESSFUL,
        CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP,
        EVIDENCE_ROWS,
        EVIDENCE_DROPPED_TOTAL,
        STATE_HEALTHY,
        STATE_ERRORS_TOTAL,
        HOST_CLOCK_OFFSET,
        CONNECTIONS,
        CONNECTIONS_CLOSED_TOTAL,
    ),
}
README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"(<!-- metrics:(?P<name>[a-z_]+) -->\n).*?(<!-- /metrics:(?P=name) -->)", re.S)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(families: Iterable[Family]) -> str:
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for family in families:
        labels = ", ".join(family.labels) or "(none)"
        rows.append(f"| `{family.name}` | {family.kind} | {labels} | {_cell(family.help)} |")
    return "\n".join(rows) + "\n"


def _section_table(name: str) -> str:
    families = SECTIONS[name]
    if name != "exporter":
        families = tuple(f for f in families if f not in SHARED)
    return table(families)


def render(readme: str) -> str:
    """The README with every marked table regenerated; an unknown section name is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in SECTIONS:
            raise KeyError(f"README names metrics:{name}; known sections: {', '.join(SECTIONS)}")
        return f"{match.group(1)}{_section_table(name)}{match.group(3)}"

    return _BLOCK.sub(replace, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.reference", description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite README.md's metric tables")
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md's tables are not current")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    current = args.readme.read_text(encoding="utf-8")
    wanted = render(current)
    if args.write and wanted != current:
        args.readme.write_text(wanted, encoding="utf-8")
    if args.check and wanted != current:
        print(f"{args.readme}: metric tables are stale; run python -m exporter.reference --write", file=sys.stderr)
        return 1
    if not (args.write or args.check):
        sys.stdout.write(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
