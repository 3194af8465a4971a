"""Copy the monitoring pack into the chart: ``python helm/sync_chart.py``.

Helm reads only files inside the chart, so the chart carries copies of alerts/*.rules.yml and dashboards/*.json
under files/. They are never edited by hand: this script writes them and a test fails when they drift.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "ad-exchange-exporter"
SOURCES = {"alerts": (ROOT / "alerts", "*.rules.yml"), "dashboards": (ROOT / "dashboards", "*.json")}


def expected() -> dict[Path, bytes]:
    """Every file the chart's files/ directory must hold, with its content."""
    out = {}
    for name, (directory, pattern) in SOURCES.items():
        for source in sorted(directory.glob(pattern)):
            out[CHART / "files" / name / source.name] = source.read_bytes()
    return out


def main() -> int:
    for name in SOURCES:
        shutil.rmtree(CHART / "files" / name, ignore_errors=True)
    for path, content in expected().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
