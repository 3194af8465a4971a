"""Exchange Server builds: cumulative updates, security and hotfix updates, support windows.

The builds come from ``exchange_build_table.py``, generated from the table Microsoft's CSS-Exchange HealthChecker
uses (``python -m tools.exchange_build_table PATH``; README, "Updating the Exchange build table"). What that table
does not hold is kept here: release dates (from Microsoft's "Exchange Server build numbers and release dates";
an update without a recorded date takes the day the same update shipped for another product, else, for a
security update, its month's Patch Tuesday, the day Exchange SUs ship; other updates without one stay undated)
and each product's end of support.

Get-ExchangeServer's AdminDisplayVersion names the CU build (15.2.1748.10): it does not move when a
security update is installed. ExSetup.exe's file version does (15.2.1748.39), so an SU is reported only
when the exporter is given that file version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from exporter.parsers.exchange_build_table import BUILDS

# How many of a product's newest CUs the Hybrid Configuration Wizard supports.
HYBRID_SUPPORTED_CUS = 2

NAMES = {
    "ExchangeSE": "Exchange Server SE",
    "Exchange2019": "Exchange Server 2019",
    "Exchange2016": "Exchange Server 2016",
    "Exchange2013": "Exchange Server 2013",
}
END_OF_SUPPORT: dict[str, date | None] = {
    "ExchangeSE": None,
    "Exchange2019": date(2025, 10, 14),
    "Exchange2016": date(2025, 10, 14),
    "Exchange2013": date(2023, 4, 11),
}
# Release days recorded from Microsoft's build list, by build.
RELEASE_DATES: dict[str, date] = {
    "15.1.225.42": date(2015, 10, 1),
    "15.1.396.30": date(2016, 3, 15),
    "15.1.466.34": date(2016, 6, 21),
    "15.1.544.27": date(2016, 9, 20),
    "15.1.669.32": date(2016, 12, 13),
    "15.1.845.34": date(2017, 3, 21),
    "15.1.1034.26": date(2017, 6, 27),
    "15.1.1261.35": date(2017, 9, 19),
    "15.1.1415.2": date(2017, 12, 19),
    "15.1.1466.3": date(2018, 3, 20),
    "15.1.1531.3": date(2018, 6, 19),
    "15.1.1591.10": date(2018, 10, 16),
    "15.1.1713.5": date(2019, 2, 12),
    "15.1.1779.2": date(2019, 6, 18),
    "15.1.1847.3": date(2019, 9, 17),
    "15.1.1913.5": date(2019, 12, 17),
    "15.1.1979.3": date(2020, 3, 17),
    "15.1.2044.4": date(2020, 6, 16),
    "15.1.2106.2": date(2020, 9, 15),
    "15.1.2176.2": date(2020, 12, 15),
    "15.1.2242.4": date(2021, 3, 16),
    "15.1.2308.8": date(2021, 6, 29),
    "15.1.2375.7": date(2021, 9, 28),
    "15.1.2507.6": date(2022, 4, 20),
    "15.1.2507.57": date(2025, 5, 29),
    "15.2.221.12": date(2018, 10, 22),
    "15.2.330.5": date(2019, 2, 12),
    "15.2.397.3": date(2019, 6, 18),
    "15.2.464.5": date(2019, 9, 17),
    "15.2.529.5": date(2019, 12, 17),
    "15.2.595.3": date(2020, 3, 17),
    "15.2.659.4": date(2020, 6, 16),
    "15.2.721.2": date(2020, 9, 15),
    "15.2.792.3": date(2020, 12, 15),
    "15.2.858.5": date(2021, 3, 16),
    "15.2.922.7": date(2021, 6, 29),
    "15.2.986.5": date(2021, 9, 28),
    "15.2.986.9": date(2021, 10, 12),
    "15.2.986.42": date(2023, 3, 14),
    "15.2.1118.7": date(2022, 4, 20),
    "15.2.1258.12": date(2023, 5, 3),
    "15.2.1544.4": date(2024, 2, 13),
    "15.2.1544.9": date(2024, 3, 12),
    "15.2.1544.11": date(2024, 4, 23),
    "15.2.1544.13": date(2024, 11, 12),
    "15.2.1544.14": date(2024, 11, 27),
    "15.2.1544.25": date(2025, 4, 18),
    "15.2.1544.27": date(2025, 5, 29),
    "15.2.1544.33": date(2025, 8, 12),
    "15.2.1544.34": date(2025, 9, 8),
    "15.2.1748.10": date(2025, 2, 10),
    "15.2.1748.24": date(2025, 4, 18),
    "15.2.1748.26": date(2025, 5, 29),
    "15.2.1748.36": date(2025, 8, 12),
    "15.2.1748.37": date(2025, 9, 8),
    "15.2.1748.39": date(2025, 10, 14),
    "15.2.2562.17": date(2025, 7, 1),
    "15.2.2562.20": date(2025, 8, 12),
    "15.2.2562.27": date(2025, 9, 8),
    "15.2.2562.29": date(2025, 10, 14),
}
_MONTHS = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}
_UPDATE_NAME = re.compile(r"^(?P<month>[A-Z][a-z]{2})(?P<year>\d{2})(?P<kind>SU|HU)(?P<again>v\d+)?$")


def patch_tuesday(year: int, month: int) -> date:
    """The second Tuesday of the month."""
    first = date(year, month, 1)
    return first + timedelta(days=(1 - first.weekday()) % 7 + 7)


def _dates_by_update_name() -> dict[str, date]:
    """An update ships for every product on one day: the day recorded for one names it for all."""
    named: dict[str, date] = {}
    for cus in BUILDS.values():
        for _, _, updates in cus:
            for name, build in updates:
                if build in RELEASE_DATES:
                    named.setdefault(name, RELEASE_DATES[build])
    return named


def release_date(build: str, update: str = "") -> date | None:
    """The recorded day; else the day the same update shipped for another product; else an SU's Patch Tuesday
    from its name (Mar24SU: 2024-03-12); else unknown."""
    if build in RELEASE_DATES:
        return RELEASE_DATES[build]
    if update in _NAMED_DATES:
        return _NAMED_DATES[update]
    match = _UPDATE_NAME.match(update)
    if match and match["kind"] == "SU" and not match["again"] and match["month"] in _MONTHS:
        return patch_tuesday(2000 + int(match["year"]), _MONTHS[match["month"]])
    return None


@dataclass(frozen=True)
class Product:
    name: str
    end_of_support: date | None
    # (CU name, build as major.minor.build.revision, release date), newest first.
    cus: tuple[tuple[str, str, date | None], ...]
    # (CU and update name, full build, release date), newest first.
    updates: tuple[tuple[str, str, date | None], ...] = ()


def _products() -> tuple[Product, ...]:
    products = []
    for key, cus in BUILDS.items():
        updates = sorted(
            ((f"{cu} {name}", build, release_date(build, name)) for cu, _, ups in cus for name, build in ups),
            key=lambda u: parse_version(u[1]),
            reverse=True,
        )
        products.append(
            Product(
                NAMES[key],
                END_OF_SUPPORT[key],
                tuple((cu, build, release_date(build)) for cu, build, _ in cus),
                tuple(updates),
            )
        )
    return tuple(products)


Version = tuple[int, int, int, int]


@dataclass(frozen=True)
class BuildInfo:
    """What a build number means."""

    version: Version
    product: str  # "Exchange Server 2019", or "unknown"
    cu: str  # "CU14", or "unknown"
    cu_release: date | None
    update: str  # "Oct25SU", "" when the build is the CU itself, "unknown" when the revision is not in the table
    update_release: date | None
    in_hybrid_window: bool
    end_of_support: date | None
    # Newer than anything the table knows for its product or CU: the exporter's table needs an update.
    newer_than_table: bool = False

    @property
    def known(self) -> bool:
        return self.cu != "unknown"

    @property
    def text(self) -> str:
        return ".".join(str(p) for p in self.version)


def parse_version(text: str) -> Version:
    parts = text.strip().split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a four-part build number: {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3])


def _product_line(version: Version) -> Product | None:
    """Exchange SE continues 2019's 15.2 numbering; it starts at its RTM build."""
    matches = [
        p
        for p in PRODUCTS
        if parse_version(p.cus[-1][1])[:2] == version[:2] and version[:3] >= parse_version(p.cus[-1][1])[:3]
    ]
    # The product whose oldest build is newest among the candidates (SE before 2019 for 15.2.2562+).
    return max(matches, key=lambda p: parse_version(p.cus[-1][1]), default=None)


def lookup(version: Version, file_version: Version | None = None) -> BuildInfo:
    """The CU a build belongs to (from AdminDisplayVersion), and the SU when ExSetup's file version is known."""
    product = _product_line(version)
    if product is None:
        return BuildInfo(version, "unknown", "unknown", None, "", None, False, None)
    cu_index = next((i for i, (_, build, _) in enumerate(product.cus) if parse_version(build)[:3] == version[:3]), None)
    if cu_index is None:
        newer = version[:3] > parse_version(product.cus[0][1])[:3]
        return BuildInfo(version, product.name, "unknown", None, "", None, False, product.end_of_support, newer)
    cu_name, cu_build, cu_date = product.cus[cu_index]
    update, update_date, newer = "", None, False
    exact = file_version or version
    if exact[:3] == version[:3] and exact != parse_version(cu_build):
        found = next(((name, when) for name, build, when in product.updates if parse_version(build) == exact), None)
        if found:
            update, update_date = found[0].removeprefix(f"{cu_name} "), found[1]
        else:
            update = "unknown"
            known = [parse_version(b) for _, b, _ in product.updates if parse_version(b)[:3] == exact[:3]]
            newer = exact > max([parse_version(cu_build), *known])
    return BuildInfo(
        version=exact,
        product=product.name,
        cu=cu_name,
        cu_release=cu_date,
        update=update,
        update_release=update_date,
        in_hybrid_window=cu_index < HYBRID_SUPPORTED_CUS,
        end_of_support=product.end_of_support,
        newer_than_table=newer,
    )


def date_to_unix(day: date | None) -> float:
    if day is None:
        return 0.0
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


_NAMED_DATES = _dates_by_update_name()
PRODUCTS = _products()
# The newest day the table knows of: what a server newer than the table is compared with.
TABLE_AS_OF: date = max(d for p in PRODUCTS for _, _, d in p.cus + p.updates if d is not None)
