"""DirectAccess parsers, on the objects the lab builds to Microsoft's documented schemas and on the other forms a
Windows host may send (enums by name or by number, nested objects serialised beyond depth)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from exporter.config import ConfigError, parse_config
from exporter.parsers import directaccess as da
from exporter.parsers.clixml import CmdletDataError, PSObject, parse_object
from lab.directaccess import CLIENTS, COMPONENTS, SERVER, LabDirectAccess
from lab.psrp_endpoint import Invocation


def ask(lab: LabDirectAccess, host: str, cmdlet: str, **params: Any) -> list[Any]:
    output = lab(Invocation("Microsoft.PowerShell", host, [(cmdlet, False, list(params.items()))]))
    assert output.error is None and output.failure is None, (output.error, output.failure)
    return [parse_object(text) for text in output.objects]


def obj(**props: Any) -> PSObject:
    out = PSObject(("Microsoft.Management.Infrastructure.CimInstance",))
    out.update(props)
    return out


def test_remote_access_health_every_component_of_the_documented_table() -> None:
    lab = LabDirectAccess()
    lab.set_component("Dns", "Error", [da.Monitor(7, "Error", "DNS servers", "No DNS server answers.", "Check them.")])
    health = {c.component: c for c in map(da.parse_component_health, ask(lab, SERVER, "Get-RemoteAccessHealth"))}
    assert set(health) == set(COMPONENTS)
    assert {name: c.state for name, c in health.items() if name != "Dns"} == {
        name: state for name, state in COMPONENTS.items() if name != "Dns"
    }
    dns = health["Dns"]
    assert dns.state == "Error"
    assert dns.monitors == (da.Monitor(7, "Error", "DNS servers", "No DNS server answers.", "Check them."),)
    assert dns.changed is not None and abs(dns.changed - dt.datetime.now(dt.UTC).timestamp()) < 60
    assert dns.server == "da1.corp.contoso.com"


@pytest.mark.parametrize(
    ("props", "state", "monitors"),
    [
        ({"Component": "IPsec", "HealthState": "Warning"}, "Warning", 0),
        ({"Component": "IPsec", "HealthState": "Degraded"}, "Unknown", 0),  # a state it does not know
        ({"Component": "IPsec", "HealthState": "Error", "Heuristics": ["RemoteAccessHealthHeuristic"]}, "Error", 0),
    ],
)
def test_remote_access_health_other_forms(props: dict[str, Any], state: str, monitors: int) -> None:
    parsed = da.parse_component_health(obj(**props))
    assert (parsed.state, len(parsed.monitors)) == (state, monitors)


def test_remote_access_health_without_a_component_names_it() -> None:
    with pytest.raises(CmdletDataError, match="Get-RemoteAccessHealth: property Component is missing"):
        da.parse_component_health(obj(HealthState="OK"))


def test_connection_summary_and_the_firewall_effect() -> None:
    lab = LabDirectAccess(connections=12, vpn=3)
    summary = da.parse_connection_summary(ask(lab, SERVER, "Get-RemoteAccessConnectionStatisticsSummary")[0])
    assert summary == da.ConnectionSummary(total=15, directaccess=12, vpn=3, unique_users=14)
    lab.set_firewall(SERVER, False, ("Public",))
    summary = da.parse_connection_summary(ask(lab, SERVER, "Get-RemoteAccessConnectionStatisticsSummary")[0])
    assert (summary.directaccess, summary.vpn) == (0, 3)
    with pytest.raises(CmdletDataError, match="TotalDAConnections is not a number"):
        da.parse_connection_summary(obj(TotalConnections=1, TotalDAConnections="many", TotalVpnConnections=0))


@pytest.mark.parametrize(
    ("status", "code", "want"),
    [
        ("IPHTTPS interface active", 0, da.IPHttpsState(True, "IPHTTPS interface active", "0x0", "none")),
        ("Failed to connect to the IPHTTPS server; waiting to reconnect", 0x2AFC, (False, "0x2afc", "no_data")),
        ("IPHTTPS interface deactivated", 0x103, (False, "0x103", "no_usable_certificate")),
        ("Failed to connect", 0x800B0109, (False, "0x800b0109", "untrusted_root")),
        ("Failed to connect", -2146762487, (False, "0x800b0109", "untrusted_root")),  # the same code, signed
        ("Failed to connect", 0x2AF9, (False, "0x2af9", "host_not_found")),
        ("Failed to connect", 0x274C, (False, "0x274c", "timed_out")),
        ("Failed to connect", 0x80090326, (False, "0x80090326", "illegal_message")),
        ("Failed to connect", 0x4BE, (False, "0x4be", "invalid_url")),
        ("Failed to connect", 0x1234, (False, "0x1234", "other")),
        ("IPHTTPS interface not active", 0, (False, "0x0", "none")),
    ],
)
def test_iphttps_state_codes(status: str, code: int, want: Any) -> None:
    parsed = da.parse_iphttps_state(obj(InterfaceStatus=status, LastErrorCode=code))
    if isinstance(want, da.IPHttpsState):
        assert parsed == want
    else:
        assert (parsed.active, parsed.code, parsed.reason) == want


def test_iphttps_state_from_the_lab_both_sides() -> None:
    lab = LabDirectAccess()
    lab.set_iphttps(CLIENTS[1], active=False, error=0x2AFC)
    assert da.parse_iphttps_state(ask(lab, SERVER, "Get-NetIPHttpsState")[0]).active
    failing = da.parse_iphttps_state(ask(lab, CLIENTS[1], "Get-NetIPHttpsState")[0])
    assert (failing.active, failing.reason) == (False, "no_data")
    lab.set_iphttps(CLIENTS[0], active=False)
    assert ask(lab, CLIENTS[0], "Get-NetIPHttpsState") == []  # not in use: no object at all


@pytest.mark.parametrize(
    ("enabled", "want"),
    [(1, True), (0, False), (2, True), ("True", True), ("False", False), ("NotConfigured", True), (True, True)],
)
def test_firewall_profile_enabled_in_every_form(enabled: Any, want: bool) -> None:
    assert da.parse_firewall_profile(obj(Name="Domain", Enabled=enabled)) == da.FirewallProfile("Domain", want)


def test_firewall_profile_refuses_what_is_not_a_gpo_boolean() -> None:
    with pytest.raises(CmdletDataError, match="Get-NetFirewallProfile Public: Enabled is 'Maybe'"):
        da.parse_firewall_profile(obj(Name="Public", Enabled="Maybe"))
    with pytest.raises(CmdletDataError, match="property Name"):
        da.parse_firewall_profile(obj(Enabled=1))


def test_firewall_profiles_from_the_lab() -> None:
    lab = LabDirectAccess()
    lab.set_firewall(SERVER, False, ("Domain",))
    profiles = [
        da.parse_firewall_profile(o) for o in ask(lab, SERVER, "Get-NetFirewallProfile", PolicyStore="ActiveStore")
    ]
    assert profiles == [
        da.FirewallProfile("Domain", False),
        da.FirewallProfile("Private", True),
        da.FirewallProfile("Public", True),
    ]


def test_connection_status_and_nrpt_and_resolution_follow_the_server_firewall() -> None:
    lab = LabDirectAccess()
    client = CLIENTS[0]
    status = da.parse_connection_status(ask(lab, client, "Get-DAConnectionStatus")[0])
    assert (status.status, status.substatus, status.connected) == ("ConnectedRemotely", "None", True)
    rules = [da.parse_nrpt_rule(o) for o in ask(lab, client, "Get-DnsClientNrptPolicy")]
    assert rules == [da.NrptRule((".corp.contoso.com",), True), da.NrptRule(("nls.corp.contoso.com",), True)]
    lab.set_firewall(SERVER, False)
    status = da.parse_connection_status(ask(lab, client, "Get-DAConnectionStatus")[0])
    assert (status.status, status.substatus, status.connected) == ("Error", "CouldNotContactDirectAccessServer", False)


@pytest.mark.parametrize(
    ("props", "want"),
    [
        (
            {"Status": "ActionableError", "Substatus": "InternetConnectivityDown"},
            ("ActionableError", "InternetConnectivityDown"),
        ),
        ({"Status": "ConnectedLocally"}, ("ConnectedLocally", "None")),
        ({"Status": "Connecting", "Substatus": "7"}, ("Unknown", "7")),
    ],
)
def test_connection_status_forms(props: dict[str, Any], want: tuple[str, str]) -> None:
    parsed = da.parse_connection_status(obj(**props))
    assert (parsed.status, parsed.substatus) == want


def test_connection_status_refuses_a_substatus_that_is_not_a_name() -> None:
    with pytest.raises(CmdletDataError, match="Substatus is not a name"):
        da.parse_connection_status(obj(Status="Error", Substatus="<script>alert(1)</script>"))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "intranet.corp.contoso.com : DNS name does not exist [DNS_ERROR_RCODE_NAME_ERROR,Microsoft.DnsClient."
            "Commands.ResolveDnsName]",
            "name_not_found",
        ),
        ("intranet : This operation returned because the timeout period expired [ERROR_TIMEOUT,...]", "timeout"),
        ("intranet : DNS server failure [DNS_ERROR_RCODE_SERVER_FAILURE,...]", "server_failure"),
        ("intranet : No records of the requested type [DNS_INFO_NO_RECORDS,...]", "no_records"),
        ("Access is denied", "error"),
    ],
)
def test_resolution_failure_reasons(text: str, reason: str) -> None:
    assert da.resolution_failure_reason(text) == reason


def test_iphttps_certificate_expiry_readable_or_not() -> None:
    lab = LabDirectAccess()
    expiry = da.parse_iphttps_certificate_expiry(ask(lab, SERVER, "Get-RemoteAccess")[0])
    assert expiry is not None and expiry > dt.datetime.now(dt.UTC).timestamp() + 40 * 86400
    # Serialised beyond the remoting depth: only its ToString arrives, and nothing is made up from it.
    assert da.parse_iphttps_certificate_expiry(obj(SslCertificate="[Subject]\n  CN=da.contoso.com")) is None


BASE = """
directaccess:
  - name: contoso-da
    servers: [{name: DA1}]
    auth: {method: kerberos}
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "    clients: [{name: LAPTOP-01, server: DA9}]\n",
            r"directaccess\[0\]: clients\[0\].server: 'DA9' is not one",
        ),
        ("    interval_seconds: 10\n    timeout_seconds: 10\n", "timeout_seconds: must be shorter"),
        ("    clients: [{name: L1, server: DA1}, {name: l1, server: DA1}]\n", "clients: a client name appears twice"),
        ("    resolve_name: 'bad name;'\n", "resolve_name"),
    ],
)
def test_config_names_the_field(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(BASE + extra)
