"""Exchange Server builds: cumulative updates, security and hotfix updates, support windows.

Maintained by hand from Microsoft's "Exchange Server build numbers and release dates" page. When a new
CU or SU ships, add its row here (newest first within a product) and bump ``TABLE_AS_OF``; the tests
check the table's order and that every product's newest CU is in its hybrid window.

Get-ExchangeServer's AdminDisplayVersion names the CU build (15.2.1748.10): it does not move when a
security update is installed. ExSetup.exe's file version does (15.2.1748.39), so an SU is reported only
when the exporter is given that file version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

TABLE_AS_OF = date(2025, 10, 14)

# How many of a product's newest CUs the Hybrid Configuration Wizard supports.
HYBRID_SUPPORTED_CUS = 2


@dataclass(frozen=True)
class Product:
    name: str
    end_of_support: date | None
    # (CU name, build as major.minor.build.revision, release date), newest first.
    cus: tuple[tuple[str, str, date], ...]
    # (update name, full build, release date), newest first.
    updates: tuple[tuple[str, str, date], ...] = ()


PRODUCTS: tuple[Product, ...] = (
    Product(
        "Exchange Server SE",
        None,
        (("RTM", "15.2.2562.17", date(2025, 7, 1)),),
        (
            ("Oct25SU", "15.2.2562.29", date(2025, 10, 14)),
            ("Sep25HU", "15.2.2562.27", date(2025, 9, 8)),
            ("Aug25SU", "15.2.2562.20", date(2025, 8, 12)),
        ),
    ),
    Product(
        "Exchange Server 2019",
        date(2025, 10, 14),
        (
            ("CU15", "15.2.1748.10", date(2025, 2, 10)),
            ("CU14", "15.2.1544.4", date(2024, 2, 13)),
            ("CU13", "15.2.1258.12", date(2023, 5, 3)),
            ("CU12", "15.2.1118.7", date(2022, 4, 20)),
            ("CU11", "15.2.986.5", date(2021, 9, 28)),
            ("CU10", "15.2.922.7", date(2021, 6, 29)),
            ("CU9", "15.2.858.5", date(2021, 3, 16)),
            ("CU8", "15.2.792.3", date(2020, 12, 15)),
            ("CU7", "15.2.721.2", date(2020, 9, 15)),
            ("CU6", "15.2.659.4", date(2020, 6, 16)),
            ("CU5", "15.2.595.3", date(2020, 3, 17)),
            ("CU4", "15.2.529.5", date(2019, 12, 17)),
            ("CU3", "15.2.464.5", date(2019, 9, 17)),
            ("CU2", "15.2.397.3", date(2019, 6, 18)),
            ("CU1", "15.2.330.5", date(2019, 2, 12)),
            ("RTM", "15.2.221.12", date(2018, 10, 22)),
        ),
        (
            ("CU15 Oct25SU", "15.2.1748.39", date(2025, 10, 14)),
            ("CU15 Sep25HU", "15.2.1748.37", date(2025, 9, 8)),
            ("CU15 Aug25SU", "15.2.1748.36", date(2025, 8, 12)),
            ("CU15 May25HU", "15.2.1748.26", date(2025, 5, 29)),
            ("CU15 Apr25HU", "15.2.1748.24", date(2025, 4, 18)),
            ("CU14 Sep25HU", "15.2.1544.34", date(2025, 9, 8)),
            ("CU14 Aug25SU", "15.2.1544.33", date(2025, 8, 12)),
            ("CU14 May25HU", "15.2.1544.27", date(2025, 5, 29)),
            ("CU14 Apr25HU", "15.2.1544.25", date(2025, 4, 18)),
            ("CU14 Nov24SUv2", "15.2.1544.14", date(2024, 11, 27)),
            ("CU14 Nov24SU", "15.2.1544.13", date(2024, 11, 12)),
            ("CU14 Apr24HU", "15.2.1544.11", date(2024, 4, 23)),
            ("CU14 Mar24SU", "15.2.1544.9", date(2024, 3, 12)),
            ("CU11 Mar23SU", "15.2.986.42", date(2023, 3, 14)),
            ("CU11 Oct21SU", "15.2.986.9", date(2021, 10, 12)),
        ),
    ),
    Product(
        "Exchange Server 2016",
        date(2025, 10, 14),
        (
            ("CU23", "15.1.2507.6", date(2022, 4, 20)),
            ("CU22", "15.1.2375.7", date(2021, 9, 28)),
            ("CU21", "15.1.2308.8", date(2021, 6, 29)),
            ("CU20", "15.1.2242.4", date(2021, 3, 16)),
            ("CU19", "15.1.2176.2", date(2020, 12, 15)),
            ("CU18", "15.1.2106.2", date(2020, 9, 15)),
            ("CU17", "15.1.2044.4", date(2020, 6, 16)),
            ("CU16", "15.1.1979.3", date(2020, 3, 17)),
            ("CU15", "15.1.1913.5", date(2019, 12, 17)),
            ("CU14", "15.1.1847.3", date(2019, 9, 17)),
            ("CU13", "15.1.1779.2", date(2019, 6, 18)),
            ("CU12", "15.1.1713.5", date(2019, 2, 12)),
            ("CU11", "15.1.1591.10", date(2018, 10, 16)),
            ("CU10", "15.1.1531.3", date(2018, 6, 19)),
            ("CU9", "15.1.1466.3", date(2018, 3, 20)),
            ("CU8", "15.1.1415.2", date(2017, 12, 19)),
            ("CU7", "15.1.1261.35", date(2017, 9, 19)),
            ("CU6", "15.1.1034.26", date(2017, 6, 27)),
            ("CU5", "15.1.845.34", date(2017, 3, 21)),
            ("CU4", "15.1.669.32", date(2016, 12, 13)),
            ("CU3", "15.1.544.27", date(2016, 9, 20)),
            ("CU2", "15.1.466.34", date(2016, 6, 21)),
            ("CU1", "15.1.396.30", date(2016, 3, 15)),
            ("RTM", "15.1.225.42", date(2015, 10, 1)),
        ),
        (("CU23 May25HU", "15.1.2507.57", date(2025, 5, 29)),),
    ),
)

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
        return BuildInfo(version, product.name, "unknown", None, "", None, False, product.end_of_support)
    cu_name, cu_build, cu_date = product.cus[cu_index]
    update, update_date = "", None
    exact = file_version or version
    if exact[:3] == version[:3] and exact != parse_version(cu_build):
        found = next(((name, when) for name, build, when in product.updates if parse_version(build) == exact), None)
        if found:
            update, update_date = found[0].removeprefix(f"{cu_name} "), found[1]
        else:
            update = "unknown"
    return BuildInfo(
        version=exact,
        product=product.name,
        cu=cu_name,
        cu_release=cu_date,
        update=update,
        update_release=update_date,
        in_hybrid_window=cu_index < HYBRID_SUPPORTED_CUS,
        end_of_support=product.end_of_support,
    )


def date_to_unix(day: date | None) -> float:
    if day is None:
        return 0.0
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
