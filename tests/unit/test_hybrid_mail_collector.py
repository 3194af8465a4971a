"""The hybrid mail collector on real messages: AuthSource stays bounded, normal mail is not counted as a loop."""

from __future__ import annotations

import quopri
from pathlib import Path

import pytest

from exporter.collectors.hybrid_mail import HybridMailCollector, auth_source_class
from exporter.config import ConfigError, parse_config
from exporter.state import StateStore
from tests.helpers import samples, series, value

MAIL = Path(__file__).resolve().parent.parent / "fixtures" / "mail"


def collector(tmp_path: Path, state: StateStore, servers: str) -> HybridMailCollector:
    config = parse_config(f"""
hybrid_mail:
  - name: journal
    drop_directories: ["{tmp_path}/drop/*.eml"]
    on_premises_servers: {servers}
""").hybrid_mail[0]
    return HybridMailCollector(config, state)


async def test_auth_source_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "drop").mkdir()
    for source in MAIL.iterdir():
        raw = source.read_bytes()
        (tmp_path / "drop" / f"{source.stem}.eml").write_bytes(
            quopri.decodestring(raw) if source.suffix == ".qp" else raw
        )
    state = StateStore(tmp_path / "state.db")
    hybrid = collector(tmp_path, state, "[CAS-ESSEN-01.secunet.de, mbx-essen-01]")
    flat = samples(await hybrid.collect())
    sources = {dict(labels)["auth_source"]: n for labels, n in series(flat, "exchange_inbound_messages_total").items()}
    # EOP's front end (BL2NAM02FT033...) is a class, the configured on-premises server keeps its name.
    assert sources == {"exchange_online": 1, "cas-essen-01.secunet.de": 1, "unknown": 2}
    assert value(flat, "exchange_inbound_message_loops_total", flow="journal") == 0
    await hybrid.close()

    # Counts stored with a raw AuthSource (before it was bounded) fold into their class on the next start.
    saved = state.get("hybrid_mail/journal")
    saved["messages"].append(["Internet", "bn8nam11ft004.mail.protection.outlook.com", "Anonymous", 3])
    with state.transaction() as put:
        put("hybrid_mail/journal", saved)
    again = collector(tmp_path, state, "[cas-essen-01.secunet.de]")
    flat = samples(await again.collect())
    assert value(
        flat, "exchange_inbound_messages_total", flow="journal", from_entity="Internet", auth_source="exchange_online",
        auth_as="Anonymous",
    ) == 4  # fmt: skip
    await again.close()
    state.close()


def test_auth_source_classes() -> None:
    onprem = {"ex1.contoso.com": "ex1.contoso.com", "ex1": "ex1.contoso.com"}
    assert auth_source_class("EX1.contoso.com", onprem) == "ex1.contoso.com"
    assert auth_source_class("ex1.corp.contoso.com", onprem) == "ex1.contoso.com"  # by short name
    assert auth_source_class("BL6PEPF00022574.namprd02.prod.outlook.com", onprem) == "exchange_online"
    assert auth_source_class("BN8NAM11FT004.eop-nam11.prod.protection.outlook.com", onprem) == "exchange_online"
    assert auth_source_class("mx.other.example", onprem) == "other"
    assert auth_source_class("", onprem) == "unknown"


def test_the_setting_is_named_when_wrong() -> None:
    with pytest.raises(ConfigError, match="on_premises_servers"):
        parse_config("hybrid_mail:\n  - {name: j, drop_directories: [x], on_premises_servers: nope}\n")
