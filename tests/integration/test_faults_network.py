"""Network faults between the exporter and its targets: a DC that dies in the middle of its answer (a paged search
cut by TCP resets through lab/faults.py's proxy), and Exchange's WinRM endpoint resetting, dropping, cutting and
faulting inside an HTTP 200 its Receive answers, then dripping them. Each time only that target is down, with a bounded
reason; the others and the scrape are untouched; once the fault clears the target comes back with the same figures.

(A DC stopped outright and one that accepts and never answers: test_exporter_process.py.)
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import free_port
from lab.exchange import ADDRESSES, ExchangeLab
from lab.faults import FaultProxy
from lab.kerberos import LabKerberos
from lab.samba import DOMAIN, SambaLab
from tests.helpers import metric
from tests.integration.conftest import RunningExporter, running_exporter

PROXY_ADDRESS = "127.0.0.13"  # where the exporter reaches the faulty target
LDAP_REASONS = {"unreachable", "timeout"}  # a cut connection is never a TLS or a search problem


def down_reason(text: str, family: str, label: str, name: str) -> str:
    """The reason the family gives the target (its one series at 1)."""
    for line in text.splitlines():
        if line.startswith(family + "{") and f'{label}="{name}"' in line and line.endswith(" 1.0"):
            found = re.search(r'reason="([^"]*)"', line)
            if found:
                return found.group(1)
    return ""


def test_a_dc_reset_in_the_middle_of_its_paged_answer(lab: SambaLab, tmp_path: Path) -> None:
    with FaultProxy(PROXY_ADDRESS, free_port(PROXY_ADDRESS), (lab.dc1.address, 636)) as proxy:
        dc1 = {"host": lab.dc1.host, "address": PROXY_ADDRESS, "port": proxy.port}
        with running_exporter(
            lab, tmp_path, interval=2, timeout=1.5, domain_controllers=[dc1], page_size=2
        ) as exporter:
            before = exporter.wait_for(
                lambda t: metric(t, "ad_dc_up", dc=lab.dc1.host) == 1 and metric(t, "ad_dc_up", dc=lab.dc2.host) == 1
            )
            figures = metric(before, "ad_accounts_with_bad_password", dc=lab.dc1.host)
            for budget in (1500, 6000, 0):  # cut early in the answer, later, and at the very first byte
                proxy.set("reset", after_bytes=budget)
                # DC1 down while DC2 is served: DC2 may miss a refresh of its own on a loaded machine (it pages by two
                # within 1.5 s too), but a DC1 fault that took DC2 with it would never show this.
                text = exporter.wait_for(
                    lambda t: (
                        metric(t, "ad_dc_up", dc=lab.dc1.host) == 0 and metric(t, "ad_dc_up", dc=lab.dc2.host) == 1
                    ),
                    timeout=20,
                )
                reason = down_reason(text, "ad_dc_error_reason", "dc", lab.dc1.host)
                assert reason in LDAP_REASONS, reason
                assert metric(text, "ad_lockout_policy_threshold", domain=DOMAIN) == lab.threshold
                assert metric(text, "ad_exchange_exporter_collector_success", collector="active_directory") == 1
                proxy.set("pass")
                after = exporter.wait_for(lambda t: metric(t, "ad_dc_up", dc=lab.dc1.host) == 1, timeout=20)
                assert metric(after, "ad_accounts_with_bad_password", dc=lab.dc1.host) == figures
            assert proxy.stats.resets >= 3
            print(f"LDAP through the proxy: {proxy.stats.connections} connections, {proxy.stats.resets} resets")


@pytest.fixture
def proxied_exchange(
    kerberos: LabKerberos, tmp_path: Path
) -> Iterator[tuple[ExchangeLab, FaultProxy, RunningExporter]]:
    """The lab's two Exchange servers; solo-e16a is reached through the fault proxy (its name, SPN and certificate
    stay its own)."""
    with ExchangeLab(tmp_path / "exchange", port=free_port(), kerberos=kerberos) as exchange:
        upstream = (ADDRESSES["solo-e16a"], exchange.port)
        with FaultProxy(PROXY_ADDRESS, exchange.port, upstream) as proxy:
            entry = exchange.config(interval=2, timeout=1.5)
            for server in entry["servers"]:
                if server["name"].lower() == "solo-e16a":
                    server["address"] = PROXY_ADDRESS
            with running_exporter(None, tmp_path / "exporter", sections={"exchange": [entry]}) as exporter:
                exporter.wait_for(
                    lambda t: all(metric(t, "exchange_server_up", server=s) == 1 for s in ("solo-e16a", "solo-e19a")),
                    timeout=40,
                )
                yield exchange, proxy, exporter


def _faulted(exporter: RunningExporter) -> str:
    """solo-e16a down with its reason, solo-e19a untouched."""
    text = exporter.wait_for(lambda t: metric(t, "exchange_server_up", server="solo-e16a") == 0, timeout=30)
    assert metric(text, "exchange_server_up", server="solo-e19a") == 1
    assert metric(text, "exchange_component_state", server="solo-e19a", component="ServerWideOffline") is not None
    return down_reason(text, "exchange_server_error_reason", "server", "solo-e16a")


def _down_with(exporter: RunningExporter, reason: str) -> str:
    return exporter.wait_for(
        lambda t: metric(t, "exchange_server_error_reason", server="solo-e16a", reason=reason) == 1, timeout=30
    )


def _recovered(exporter: RunningExporter) -> None:
    exporter.wait_for(lambda t: metric(t, "exchange_server_up", server="solo-e16a") == 1, timeout=40)


def test_winrm_faults_mark_only_that_server_down(
    proxied_exchange: tuple[ExchangeLab, FaultProxy, RunningExporter],
) -> None:
    exchange, proxy, exporter = proxied_exchange
    behaviour = exchange.endpoints["solo-e16a"].behaviour
    results: dict[str, str] = {}
    endpoint = exchange.endpoints["solo-e16a"]
    shells = endpoint.open_shells  # the exporter's one runspace

    for _ in range(2):  # the connection dropped (reset) in the middle of an answer, twice; back each time
        proxy.set("reset", after_bytes=3000)
        results["reset mid-response"] = _faulted(exporter)
        proxy.set("pass")
        _recovered(exporter)
    # The resets cut the broken runspaces' Deletes too: those shells are deleted over the connection that works
    # again, not left on the server to count against MaxShellsPerUser for WinRM's idle timeout.
    print("shells open before the resets and after:", shells, endpoint.open_shells)
    assert "the shell could not be deleted" in exporter.logs()
    assert endpoint.open_shells == shells
    # Receive answers that go wrong: a WSMan fault inside an HTTP 200 (pypsrp reads one as an empty answer), a
    # Receive answered at once with nothing however long the server has been asked (so the runspace never opens
    # either), and answers cut in half. Each is reported with its reason, the server is not asked in a hot loop,
    # the shells of failed opens are deleted rather than left to count against MaxShellsPerUser, and the server
    # is back once its answers are whole again.
    for fault, reason, logged in (
        ("fault_in_200", "wsman_fault", ""),
        ("empty", "timeout", "the runspace was not open after 4s"),  # the pipeline's Receives first, then the open's
        ("malformed", "protocol_error", ""),
    ):
        behaviour.receive_fault = fault
        text = _down_with(exporter, reason)
        assert metric(text, "exchange_server_up", server="solo-e19a") == 1
        receives, started = behaviour.count["Receive"], time.monotonic()
        time.sleep(4)  # two refresh intervals under the fault: how often is the server asked?
        per_second = (behaviour.count["Receive"] - receives) / (time.monotonic() - started)
        results[f"receive {fault}"] = f"{reason}, {per_second:.1f} Receives/s"
        assert per_second < 10, results
        if logged:
            exporter.wait_for_log(logged)
        behaviour.receive_fault = ""
        _recovered(exporter)
        assert endpoint.open_shells <= shells, f"{endpoint.open_shells} shells open after {fault}, {shells} before"
    print("shells open before the Receive faults and after:", shells, endpoint.open_shells)
    print("WinRM faults and the reasons reported:", results)
    assert results["reset mid-response"] == "unreachable"

    # A slow drip: 16 bytes every 0.2 s, each read well within the socket timeout, the answer far beyond the
    # deadline. Reported as a timeout at the deadline; the other server and the scrape carry on; and the exchange
    # is cut at its hard deadline (exporter/sources/deadline.py), so the thread and the server's lock are free
    # again and the server is back within a few refreshes once the drip stops, not when its answer ends.
    # A new connection takes the proxy's mode when it opens: the kept-alive one is cut first.
    proxy.set("reset", after_bytes=0)
    _down_with(exporter, "unreachable")
    proxy.set("drip", drip_bytes=16, drip_seconds=0.2)
    text = _down_with(exporter, "timeout")
    assert metric(text, "exchange_server_up", server="solo-e19a") == 1
    started = time.monotonic()
    exporter.metrics()
    assert time.monotonic() - started < 1.0  # scrapes are served from the last refresh
    # Each dripped exchange is cut at its deadline (4 s here) and the next refresh connects anew: a thread held
    # until the answer's end would make no new connection for minutes.
    connections = proxy.stats.connections
    exporter.wait_for(lambda _: proxy.stats.connections >= connections + 2, timeout=30)
    # Logged as each exchange is cut, on its worker thread: on a loaded machine that can come after the next
    # refresh's connection was counted above.
    exporter.wait_for_log("the answer did not arrive whole within 4s", timeout=15)
    proxy.set("pass")
    _recovered(exporter)
