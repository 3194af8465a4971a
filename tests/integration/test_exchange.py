"""Exchange health through the real pypsrp client and the lab's WSMan/PSRP endpoint."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from exporter.sources.credential_guard import CredentialGuard
from exporter.sources.winrm import PsrpClient, RemotingCredential, RemotingError, RemotingTarget
from lab import free_port
from lab.exchange import ADDRESSES, SAMPLES, SERVICE_USER, ExchangeLab
from lab.kerberos import REMOTING_PASSWORD, LabKerberos
from tests.helpers import metric, samples, series
from tests.integration.conftest import running_exporter

STATE = {"Inactive": 0, "Active": 1, "Draining": 2}


@pytest.fixture
def exchange(tmp_path: Path, kerberos: LabKerberos) -> Iterator[ExchangeLab]:
    with ExchangeLab(tmp_path / "exchange", port=free_port(), kerberos=kerberos) as lab:
        yield lab


def sample_truth() -> tuple[dict[str, str], set[tuple[str, str, str, int]]]:
    """Component states and requester entries read straight from the sample with ElementTree (not our parser)."""
    root = ET.fromstring((SAMPLES / "E16_Exchange_GetServerComponentState.xml").read_text(encoding="utf-8-sig"))  # noqa: S314
    ns = {"p": "http://schemas.microsoft.com/powershell/2004/04"}
    states, requesters = {}, set()
    for obj in root.findall("p:Obj", ns):
        component = obj.findtext("p:Props/p:S[@N='Component']", namespaces=ns) or ""
        states[component] = obj.findtext("p:Props/p:Obj[@N='State']/p:ToString", namespaces=ns) or ""
        for scope, prop in (("local", "LocalStates"), ("remote", "RemoteStates")):
            for details in obj.findall(f"p:Props/p:Obj[@N='{prop}']/p:LST/p:Obj/p:Props", ns):
                requester = details.findtext("p:S[@N='Requester']", namespaces=ns) or ""
                state = details.findtext("p:S[@N='State']", namespaces=ns) or ""
                requesters.add((component, requester, scope, STATE[state]))
    return states, requesters


def client(lab: ExchangeLab) -> WSMan:
    return lab.admin_connection("solo-e19a")


def set_component(lab: ExchangeLab, component: str, state: str, requester: str) -> None:
    """As an admin would, through the unmodified pypsrp client."""
    with RunspacePool(client(lab), configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Set-ServerComponentState").add_parameter("Identity", "SOLO-E19A")
        ps.add_parameter("Component", component).add_parameter("State", state).add_parameter("Requester", requester)
        ps.invoke()
        assert not ps.had_errors


def test_e16_sample_every_component_with_state_and_requesters(exchange: ExchangeLab, tmp_path: Path) -> None:
    states, requesters = sample_truth()
    assert len(states) == 35
    with running_exporter(None, tmp_path, exchange=exchange, interval=2, timeout=1.5) as exporter:
        text = exporter.wait_for(lambda t: metric(t, "exchange_server_up", server="solo-e16a") == 1)
    for component, state in states.items():
        assert metric(text, "exchange_component_state", server="solo-e16a", component=component) == STATE[state]
    flat = samples_from(text)
    exported = {
        (dict(labels)["component"], dict(labels)["requester"], dict(labels)["scope"], int(value))
        for labels, value in series(flat, "exchange_component_requester_state", server="solo-e16a").items()
    }
    assert exported == requesters
    assert (
        metric(
            text,
            "exchange_build_info",
            server="solo-e16a",
            version="15.1.2375.7",
            cu="CU22",
            product="Exchange Server 2016",
        )
        == 1
    )
    # The security update level comes from ExSetup's file version, read over the plain PowerShell endpoint.
    assert (
        metric(text, "exchange_build_info", server="solo-e19a", version="15.2.986.42", cu="CU11", update="Mar23SU") == 1
    )
    assert metric(text, "exchange_build_in_hybrid_support_window", server="solo-e19a") == 0
    assert metric(text, "exchange_cmdlet_success", server="solo-e19a", cmdlet="Get-Command ExSetup.exe") == 1
    every = [i for e in exchange.endpoints.values() for i in e.invocations]
    plain = [i for i in every if i.configuration == "Microsoft.PowerShell"]
    # It carries only the two reads that need it: ExSetup's version and the Emergency Mitigation service.
    asked = {tuple(i.commands[0][2]) for i in plain}
    assert (("Name", "ExSetup.exe"),) in asked and asked <= {
        (("Name", "ExSetup.exe"),),
        (("Name", "MSExchangeMitigation"),),
    }
    assert all(len(i.commands) == 1 and i.commands[0][0] in ("Get-Command", "Get-Service") for i in plain)
    # Every cmdlet went out as a cmdlet with parameters to Microsoft.Exchange, never as a script.
    invocations = [i for i in every if i.configuration == "Microsoft.Exchange"]
    assert len(invocations) + len(plain) == len(every)
    assert all(
        not is_script and name.startswith(("Get-", "Test-")) for i in invocations for name, is_script, _ in i.commands
    )
    assert {name for i in invocations for name, _, _ in i.commands} >= {
        "Get-ExchangeServer",
        "Get-ServerComponentState",
        "Get-Queue",
        "Get-ExchangeCertificate",
        "Get-RemoteMailbox",
        "Get-AcceptedDomain",
        "Get-SendConnector",
        "Get-ReceiveConnector",
        "Get-HybridConfiguration",
    }
    assert all(
        params
        for i in invocations
        for name, _, params in i.commands
        if name in ("Get-ServerComponentState", "Get-Queue", "Get-ExchangeServer")
    )


def samples_from(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return samples(text_string_to_metric_families(text))


def test_server_wide_offline_held_by_functional(exchange: ExchangeLab, tmp_path: Path) -> None:
    swo = {"server": "solo-e19a", "component": "ServerWideOffline"}
    with running_exporter(None, tmp_path, exchange=exchange, interval=2, timeout=1.5) as exporter:
        exporter.wait_for(lambda t: metric(t, "exchange_component_state", **swo) == 1)
        set_component(exchange, "ServerWideOffline", "Inactive", "Functional")
        text = exporter.wait_for(lambda t: metric(t, "exchange_component_state", **swo) == 0)
        assert metric(text, "exchange_component_requester_state", requester="Functional", scope="local", **swo) == 0
        assert metric(text, "exchange_component_requester_state", requester="Functional", scope="remote", **swo) == 0
        # The other server is untouched.
        assert metric(text, "exchange_component_state", server="solo-e16a", component="ServerWideOffline") == 1
        # Setting it Active as Maintenance does not help: Functional still holds it, and the metrics say so.
        set_component(exchange, "ServerWideOffline", "Active", "Maintenance")
        text = exporter.wait_for(
            lambda t: (
                metric(t, "exchange_component_requester_state", requester="Maintenance", scope="local", **swo) == 1
            )
        )
        assert metric(text, "exchange_component_state", **swo) == 0
        assert metric(text, "exchange_component_requester_state", requester="Functional", scope="local", **swo) == 0
        set_component(exchange, "ServerWideOffline", "Active", "Functional")
        text = exporter.wait_for(lambda t: metric(t, "exchange_component_state", **swo) == 1)
        assert metric(text, "exchange_component_requester_state", requester="Functional", scope="local", **swo) == 1
        # Runspaces per server, each reused by every refresh (each refresh runs five or more pipelines): one on
        # Microsoft.Exchange for the core cmdlets, one there for health in depth (it must never hold up the core),
        # and one on Microsoft.PowerShell for ExSetup's version and the Emergency Mitigation service.
        counts = exchange.endpoints["solo-e16a"].behaviour.count
        # One more is allowed: on a loaded machine one Create in a few runs was seen twice with no failure logged.
        assert counts["Create"] <= 4 and counts["Command"] >= 15, exporter.logs()


def test_each_failure_marks_only_its_server_down_with_a_reason(exchange: ExchangeLab, tmp_path: Path) -> None:
    e19 = exchange.endpoints["solo-e19a"]
    failures: list[tuple[str, Callable[[], object]]] = [
        ("server_error", lambda: e19.misbehave(status=500)),
        ("timeout", lambda: e19.misbehave(stall=True)),
        (
            "cmdlet_error",
            lambda: exchange.org.fail_cmdlet(
                "solo-e19a", "Get-Queue", "The Microsoft Exchange Transport service is not running."
            ),
        ),
        # A valid Kerberos ticket refused: the server's keys, not the account (which is never held back for it).
        ("ticket_refused", lambda: e19.misbehave(status=401)),
    ]
    with running_exporter(
        None, tmp_path, exchange=exchange, interval=2, timeout=1.5, exchange_overrides={"bind_retry_after_seconds": 3}
    ) as exporter:
        exporter.wait_for(lambda t: metric(t, "exchange_server_up", server="solo-e19a") == 1)
        for reason, fail in failures:
            fail()
            try:
                text = exporter.wait_for(
                    lambda t, r=reason: metric(t, "exchange_server_error_reason", server="solo-e19a", reason=r) == 1,
                    timeout=20,
                )
                assert metric(text, "exchange_server_up", server="solo-e19a") == 0
                assert metric(text, "exchange_server_up", server="solo-e16a") == 1
                assert metric(text, "exchange_component_state", server="solo-e16a", component="HubTransport") == 1
                page = exporter.page("/")
                assert "solo-e19a" in page and reason in page
            finally:
                e19.misbehave()
                exchange.org.fail_cmdlet("solo-e19a", "Get-Queue", None)
            exporter.wait_for(lambda t: metric(t, "exchange_server_up", server="solo-e19a") == 1, timeout=30)
        logs, metrics, page = exporter.logs(), exporter.metrics(), exporter.page("/")
    assert "Transport service is not running" in logs  # the cmdlet's own message reaches the log
    for where, text in (("log", logs), ("metrics", metrics), ("page", page)):
        for secret in (exchange.password, REMOTING_PASSWORD):
            assert secret not in text, f"the password appears in the {where}"


def test_a_hung_cmdlet_is_given_up_and_its_runspace_closed(exchange: ExchangeLab, tmp_path: Path) -> None:
    """Get-Queue never ends (a wedged transport service): pypsrp would poll it for good, holding the server's thread
    and lock; the client gives up on it, closes the runspace (which ends it on the server) and tries again."""
    e19 = exchange.endpoints["solo-e19a"]
    with running_exporter(None, tmp_path, exchange=exchange, interval=2, timeout=1.5) as exporter:
        exporter.wait_for(lambda t: metric(t, "exchange_server_up", server="solo-e19a") == 1)
        deleted = e19.behaviour.count["Delete"]
        exchange.org.hang_cmdlet("solo-e19a", "Get-Queue")
        try:
            text = exporter.wait_for(
                lambda t: metric(t, "exchange_server_error_reason", server="solo-e19a", reason="timeout") == 1
            )
            assert metric(text, "exchange_server_up", server="solo-e16a") == 1
            exporter.wait_for_log("Get-Queue still running after 4s; its runspace is closed")
            # Not held for good: each refresh asks again (a new runspace each time) and times out again.
            created = e19.behaviour.count["Create"]
            exporter.wait_for_log("Get-Queue still running after 4s", count=3)
            assert e19.behaviour.count["Create"] > created and e19.behaviour.count["Delete"] > deleted
        finally:
            exchange.org.hang_cmdlet("solo-e19a", "Get-Queue", hang=False)
        exporter.wait_for(lambda t: metric(t, "exchange_server_up", server="solo-e19a") == 1, timeout=30)


def test_a_connection_closed_while_idle_is_reopened_without_a_failure(exchange: ExchangeLab, tmp_path: Path) -> None:
    """http.sys closes a kept-alive connection idle for 120 s, far less than the default refresh intervals (300 s,
    900 s). The next request goes on a new connection, where the old one's message-encryption context means nothing
    and WinRM answers 400 with no body. The client sets the context up again and carries on: the server stays up,
    its runspace is kept, and nothing is logged."""
    e19 = exchange.endpoints["solo-e19a"]
    e19.behaviour.idle_timeout = 0.5  # the refresh interval is 3 s: every refresh finds its connection closed
    # A timeout with room: each refresh authenticates twice more, and a loaded machine's slow refresh is not the
    # failure looked for here.
    with running_exporter(None, tmp_path, exchange=exchange, interval=3, timeout=2.5) as exporter:
        exporter.wait_for(lambda t: metric(t, "exchange_server_up", server="solo-e19a") == 1)
        # Its three runspaces (the core cmdlets, health in depth, the plain PowerShell endpoint) open over the first
        # refreshes, not all by the first scrape that shows it up: counted once all three are there.
        exporter.wait_for(lambda _: e19.behaviour.count["Create"] >= 3)
        created, authenticated = e19.behaviour.count["Create"], sum(e19.behaviour.authentications.values())
        refused = e19.behaviour.refusals.counts.get("undecryptable", 0)
        # Three more messages refused on a connection opened after an idle close, each followed by a new context.
        text = exporter.wait_for(lambda _: e19.behaviour.refusals.counts.get("undecryptable", 0) >= refused + 3)
        assert metric(text, "exchange_server_up", server="solo-e19a") == 1, exporter.logs()
        assert e19.behaviour.count["Create"] == created, exporter.logs()
        # Each context set up anew; two authentications each here (pypsrp answers the new connection's 401 first).
        assert sum(e19.behaviour.authentications.values()) >= authenticated + 3
        logs = exporter.logs()
        assert "solo-e19a" not in logs and " ERROR " not in logs, logs


def test_a_slow_server_is_slow_but_up(exchange: ExchangeLab, tmp_path: Path) -> None:
    e19 = exchange.endpoints["solo-e19a"]
    with running_exporter(None, tmp_path, exchange=exchange, interval=4, timeout=3) as exporter:
        exporter.wait_for(lambda t: metric(t, "exchange_server_up", server="solo-e19a") == 1)
        e19.misbehave(delay=0.1)  # every request, well within the 3 s timeout

        def took(t: str, server: str) -> float:
            return metric(t, "exchange_server_sweep_duration_seconds", server=server) or 0.0

        # Its delays add up over its requests, the other server is not held up by them (a loaded machine slows both
        # alike, so the two are compared), and the slow one is still up.
        text = exporter.wait_for(lambda t: took(t, "solo-e19a") > took(t, "solo-e16a") + 0.6, timeout=30)
        assert metric(text, "exchange_server_up", server="solo-e19a") == 1
        assert metric(text, "exchange_server_up", server="solo-e16a") == 1


def test_exchange_runspace_refuses_scripts(exchange: ExchangeLab) -> None:
    with RunspacePool(client(exchange), configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_script("Get-ServerComponentState -Identity SOLO-E19A | Where-Object State -eq Inactive")
        output = ps.invoke()
    assert output == [] and ps.had_errors
    assert "no-language mode" in str(ps.streams.error[0])


def test_https_verifies_the_certificate(tmp_path: Path) -> None:
    with ExchangeLab(tmp_path / "exchange", port=free_port(), https=True) as lab:

        def run(ca_file: Path | None) -> list[str]:
            target = RemotingTarget(
                "solo-e16a",
                ADDRESSES["solo-e16a"],
                lab.port,
                "https",
                "PowerShell",
                "Microsoft.Exchange",
                True,
                ca_file,
                "auto",
                3,
            )
            credential = RemotingCredential("basic", SERVICE_USER, SecretStr(lab.password))
            psrp = PsrpClient(target, credential, CredentialGuard(), retry_after=60)
            try:
                return psrp.run("Get-ExchangeServer", {"Identity": "SOLO-E16A"})
            finally:
                psrp.close()

        assert len(run(lab.ca_file)) == 1
        with pytest.raises(RemotingError) as refused:
            run(None)  # the system's CAs do not know the lab CA
        assert refused.value.reason == "tls_error"


def routing_findings(text: str) -> set[tuple[str, str, str]]:
    return {
        (dict(labels)["kind"], dict(labels)["object"], dict(labels)["severity"])
        for labels, v in series(samples_from(text), "exchange_routing_finding_info").items()
        if v == 1
    }


def test_mail_routing_findings_through_pypsrp(exchange: ExchangeLab, tmp_path: Path) -> None:
    """The lab organisation's wrong objects are found, its right ones are not; anonymous rights come from the
    Get-ReceiveConnector | Get-ADPermission pipeline, and an account that may not read them loses only that."""
    with running_exporter(None, tmp_path, exchange=exchange, interval=2, timeout=1.5) as exporter:
        text = exporter.wait_for(lambda t: metric(t, "exchange_routing_permissions_read") == 1)
        assert routing_findings(text) == {
            ("open_relay", "SOLO-E19A\\Relay Scanners", "critical"),
            ("internal_relay_without_send_connector", "fabrikam.com", "warning"),
            # The real sample's connector to Office 365 does not require TLS.
            ("office365_send_connector_without_tls", "Mail to O365", "warning"),
        }
        assert metric(text, "exchange_routing_findings", kind="open_relay") == 1
        assert metric(text, "exchange_routing_findings", kind="centralized_transport_cannot_relay") == 0
        # The relay right taken away from the connector Office 365 delivers to: centralized transport breaks.
        with exchange.org._lock:
            exchange.org.ad_permissions = [p for p in exchange.org.ad_permissions if "From Office 365" not in p[0]]
        text = exporter.wait_for(
            lambda t: metric(t, "exchange_routing_findings", kind="centralized_transport_cannot_relay") == 1
        )
        assert ("centralized_transport_cannot_relay", "SOLO-E19A\\From Office 365", "warning") in routing_findings(text)
        # Without the right to read permissions, the rest is still checked and the gap is said.
        for server in ("solo-e16a", "solo-e19a"):
            exchange.org.fail_cmdlet(server, "Get-ADPermission", "Access denied: Active Directory Permissions role")
        text = exporter.wait_for(lambda t: metric(t, "exchange_routing_permissions_read") == 0)
        assert metric(text, "exchange_hybrid_settings_up") == 1
        assert {k for k, _, _ in routing_findings(text)} == {
            "internal_relay_without_send_connector",
            "office365_send_connector_without_tls",
        }
