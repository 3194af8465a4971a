"""Generate the exporter's Exchange build table from the one Microsoft's HealthChecker uses.

    python -m tools.exchange_build_table PATH/TO/Get-ExchangeBuildVersionInformation.ps1

PATH is CSS-Exchange's ``Shared/Get-ExchangeBuildVersionInformation.ps1`` (MIT; microsoft/CSS-Exchange), which
lists every CU of Exchange 2013, 2016, 2019 and SE with its security and hotfix updates. Only the facts are taken
(product, CU, update name, build number): this writes ``exporter/parsers/exchange_build_table.py``, a plain data
module. Release dates and end-of-support dates are not in that file; they stay in ``exchange_builds.py``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "exporter" / "parsers" / "exchange_build_table.py"
PRODUCT_KEYS = ("ExchangeSE", "Exchange2019", "Exchange2016", "Exchange2013")

_PRODUCT = re.compile(r'^\s*"(Exchange(?:SE|\d{4}))"\s*=\s*@\{\s*$')
_CU = re.compile(r'^\s*"((?:CU\d+|RTM))"\s*=\s*\(NewCUAndSUObject\s+"(\d+\.\d+\.\d+\.\d+)"(\s*@\{)?\s*\)?\s*$')
_UPDATE = re.compile(r'^\s*"([A-Z][a-z]{2}\d{2}(?:SU|HU)(?:v\d+)?)"\s*=\s*"(\d+\.\d+\.\d+\.\d+)"\s*$')

Updates = list[tuple[str, str]]
Table = dict[str, list[tuple[str, str, Updates]]]


class TableError(ValueError):
    """The reference file does not have the shape this generator knows; it names the line."""


def _key(build: str) -> tuple[int, ...]:
    return tuple(int(p) for p in build.split("."))


def parse_reference(text: str) -> Table:
    """{product key: [(CU, build, [(update, build), ...]), ...]} in the file's order."""
    table: Table = {}
    product: str | None = None
    current: Updates | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if match := _PRODUCT.match(line):
            product = match.group(1)
            table[product] = []
            current = None
        elif (match := _CU.match(line)) and product is not None:
            updates: Updates = []
            table[product].append((match.group(1), match.group(2), updates))
            current = updates if match.group(3) else None
        elif (match := _UPDATE.match(line)) and current is not None:
            current.append((match.group(1), match.group(2)))
        elif current is not None and line.strip() == "})":
            current = None
        elif current is not None and line.strip():
            raise TableError(f"line {number}: not an update of the CU above: {line.strip()!r}")
    missing = [key for key in PRODUCT_KEYS if not table.get(key)]
    if missing:
        raise TableError(f"no CUs found for {', '.join(missing)}")
    return table


def render(table: Table, source: str) -> str:
    lines = [
        '"""Exchange builds: every CU and its security/hotfix updates, newest first. GENERATED, do not edit:',
        "",
        "    python -m tools.exchange_build_table PATH/TO/Get-ExchangeBuildVersionInformation.ps1",
        "",
        f"Source: {source} (MIT, microsoft/CSS-Exchange), the table HealthChecker uses.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "# product key -> ((CU, CU build, ((update, build), ...)), ...)",
        "BUILDS: dict[str, tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]] = {",
    ]
    for product in PRODUCT_KEYS:
        lines.append(f'    "{product}": (')
        for cu, build, updates in sorted(table[product], key=lambda row: _key(row[1]), reverse=True):
            ordered = sorted(updates, key=lambda u: (_key(u[1]), u[0]), reverse=True)
            lines.append(f'        ("{cu}", "{build}", (')
            lines.extend(f'            ("{name}", "{ub}"),' for name, ub in ordered)
            lines.append("        )),")
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.exchange_build_table", description=__doc__)
    parser.add_argument("reference", type=Path, help="CSS-Exchange's Get-ExchangeBuildVersionInformation.ps1")
    parser.add_argument("--source", default="Shared/Get-ExchangeBuildVersionInformation.ps1")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    try:
        table = parse_reference(args.reference.read_text(encoding="utf-8-sig"))
    except (OSError, TableError) as exc:
        print(f"{args.reference}: {exc}", file=sys.stderr)
        return 1
    args.out.write_text(render(table, args.source), encoding="utf-8")
    counts = {p: (len(t), sum(len(u) for _, _, u in t)) for p, t in table.items()}
    print(f"wrote {args.out}: " + ", ".join(f"{p} {cus} CUs/{ups} updates" for p, (cus, ups) in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
