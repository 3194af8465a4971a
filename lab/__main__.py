"""Lab command line.

python -m lab demo [--port 9733]   start the lab and the exporter, make failed logons until Ctrl-C
python -m lab up DIR               provision and start the lab in DIR, print its facts, and exit
python -m lab down DIR             stop the lab in DIR and remove it
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from lab import stop_process
from lab.activesync import SERVICE_ADDRESS, ActiveSyncStandIn, phone_sync, stale_service
from lab.directaccess import SERVER as DA_SERVER
from lab.directaccess import DirectAccessLab
from lab.exchange import ExchangeLab
from lab.exchange_logs import LogWriter
from lab.exporter_config import mail_sections, write_config
from lab.kerberos import LabKerberos
from lab.samba import USER_PASSWORD, USERS, SambaLab
from lab.smtp import SmtpLab
from lab.winevent import DC_SAMPLES, HARDENED, EventLab, dc_endpoint, sample_log

# The Exchange side of the demo: when the failed update happens and when an admin fixes it (seconds).
SWO_BREAKS_AT, SWO_FIXED_AT = 60, 300
STORIES_AT = 30  # the lockout stories: a phone and a service left with old passwords
STORY_PASSWORD = "Lab-User-Pass2!"
# The hybrid side: on-premises presents a renewed certificate with another Organisation, later fixed.
CERT_RENEWED_AT, CERT_FIXED_AT = 150, 330
# DirectAccess: someone turns the Remote Access server's firewall off "to test", and later back on.
DA_FIREWALL_OFF_AT, DA_FIREWALL_ON_AT = 90, 420


def _demo(port: int) -> int:
    # Longer than the tests' policy, so that a person watching sees lockouts last a while.
    lab = SambaLab(lockout_threshold=5, lockout_duration=300, observation_window=300)
    exporter: subprocess.Popen[bytes] | None = None
    exchange: ExchangeLab | None = None
    events: EventLab | None = None
    smtp: SmtpLab | None = None
    directaccess: DirectAccessLab | None = None
    stand_in: ActiveSyncStandIn | None = None
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        print("Provisioning a two-DC Samba AD domain on 127.0.0.2 and 127.0.0.6 ...", flush=True)
        lab.provision()
        print(
            "Starting the lab's Exchange endpoints (WS-Management/PSRP on 127.0.0.10 and 127.0.0.11:5985, Kerberos "
            "with message encryption, keys from the lab domain) ...",
            flush=True,
        )
        # HTTP/<host> principals in the lab domain with their keys in the acceptors' keytab, as for real servers.
        kerberos = LabKerberos(lab)
        exchange = ExchangeLab(lab.root / "exchange", port=5985, kerberos=kerberos).start()
        # The DCs' Security logs (recorded 4740/4625/4771/4776 events) over WinRM on the DC addresses.
        events = EventLab(lab.root / "events", port=5985, kerberos=kerberos).start()
        # SOLO-E19A's IIS, SMTP and message tracking logs, written as it serves traffic.
        logs = LogWriter(lab.root / "exchange-logs", server="SOLO-E19A")
        # Its ActiveSync front end, for the lockout stories: a phone's password checked against DC1 for real.
        stand_in = ActiveSyncStandIn(lab, logs, lab.dc1, events)
        stand_in.start()
        phone_user, service_user = lab.create_user("phoebe"), lab.create_user("svc_report")
        # Hybrid mail flow: an on-premises relay, an inbound connector attributing by certificate, a canary.
        smtp = SmtpLab(lab.root / "smtp").start()
        # A DirectAccess server and two canary laptops (WS-Management/PSRP on 127.0.0.30-32).
        directaccess = DirectAccessLab(lab.root / "directaccess", port=5985).start()
        config = write_config(
            lab,
            lab.root / "exporter.yml",
            port=port,
            interval=10,
            exchange=exchange,
            events=events,
            state=lab.root / "state.db",
            logs=logs,
            directaccess=directaccess,
            sections=mail_sections(smtp, interval=10, timeout=5, late=60, probe_timeout=5, scheduled=True),
        )
        # The exporter finds the lab KDC through KRB5_CONFIG, as it would /etc/krb5.conf; the keys are the acceptors'.
        client_env = {k: v for k, v in os.environ.items() if k not in ("KRB5_KTNAME", "NTLM_USER_FILE")}
        exporter = subprocess.Popen([sys.executable, "-m", "exporter", f"--config.file={config}"], env=client_env)
        print(
            f"\nExporter metrics: http://127.0.0.1:{port}/metrics\n"
            f"Landing page:     http://127.0.0.1:{port}/\n"
            "Making real failed logons (LDAP, Kerberos, SMB) against both DCs. The Exchange servers SOLO-E16A and\n"
            "SOLO-E19A are the lab's PSRP endpoint answering with recorded Exchange objects, not real Exchange.\n"
            f"After {SWO_BREAKS_AT} s a 'failed update' leaves SOLO-E19A's ServerWideOffline Inactive (requester "
            f"Functional); it is fixed after {SWO_FIXED_AT} s. Ctrl-C stops and tears down.\n",
            flush=True,
        )
        print(
            "Lockout stories, after 30 s (their passwords are reset by an administrator, the old ones stay in use):\n"
            f"  a phone on ActiveSync through SOLO-E19A: http://127.0.0.1:{port}/lockouts/{phone_user}\n"
            f"  a service on {SERVICE_ADDRESS} binding to DC2: http://127.0.0.1:{port}/lockouts/{service_user}\n"
            f"  or: python -m exporter investigate {phone_user} --url http://127.0.0.1:{port}\n",
            flush=True,
        )
        rng = random.Random(2)
        started = time.monotonic()
        stories_told = False
        next_lockout = started + 15
        swo_broken = swo_fixed = cert_renewed = cert_fixed = da_off = da_on = False
        while not stopping:
            elapsed = time.monotonic() - started
            if not swo_broken and elapsed >= SWO_BREAKS_AT:
                print(
                    "SOLO-E19A: a failed update to CU12: ServerWideOffline held Inactive by requester Functional, "
                    "FrontendTransport Unhealthy, MSExchangeTransport stopped, a database copy Suspended, activation "
                    "Blocked, back pressure, Emergency Mitigation disabled ...",
                    flush=True,
                )
                exchange.org.fail_update("solo-e19a")
                logs.transport_inactive = True  # its front end now answers 421 4.3.2
                swo_broken = True
            if not cert_renewed and elapsed >= CERT_RENEWED_AT:
                print(
                    "on-premises now presents a renewed certificate (O=Contoso Holdings): mail arrives Anonymous",
                    flush=True,
                )
                smtp.renew_onprem_certificate("Contoso Holdings")
                cert_renewed = True
            if cert_renewed and not cert_fixed and elapsed >= CERT_FIXED_AT:
                print("the connector's certificate is fixed (O=Contoso Ltd): mail arrives Internal again", flush=True)
                smtp.renew_onprem_certificate("Contoso Ltd")
                cert_fixed = True
            if not da_off and elapsed >= DA_FIREWALL_OFF_AT:
                print(
                    f"DirectAccess: {DA_SERVER}'s Windows Firewall turned off: IP-HTTPS stays up, names through the "
                    "NRPT stop resolving on the laptops",
                    flush=True,
                )
                directaccess.deployment.set_firewall(DA_SERVER, False)
                da_off = True
            if da_off and not da_on and elapsed >= DA_FIREWALL_ON_AT:
                print(f"DirectAccess: {DA_SERVER}'s Windows Firewall turned back on (fixed)", flush=True)
                directaccess.deployment.set_firewall(DA_SERVER, True)
                da_on = True
            if swo_broken and not swo_fixed and elapsed >= SWO_FIXED_AT:
                print(
                    "SOLO-E19A: the admin finishes setup (ServerWideOffline Active, transport started); the copy, "
                    f"activation and Emergency Mitigation are still broken: http://127.0.0.1:{port}/patch-days",
                    flush=True,
                )
                exchange.org.fix_update("solo-e19a")
                logs.transport_inactive = False
                swo_fixed = True
            if exporter.poll() is not None:
                print("the exporter exited", file=sys.stderr)
                return 1
            if not stories_told and elapsed >= STORIES_AT:
                phone_sync(stand_in, phone_user, USER_PASSWORD)  # it worked until the reset
                lab.set_password(phone_user, STORY_PASSWORD, changes=3)  # see SambaLab.set_password
                lab.set_password(service_user, STORY_PASSWORD)
                for _ in range(lab.threshold + 1):
                    phone_sync(stand_in, phone_user, USER_PASSWORD)
                stale_service(lab, service_user, lab.dc2, lab.threshold)
                print(f"{phone_user} and {service_user} are locked out: see their pages above", flush=True)
                stories_told = True
            logs.write(requests=200, sessions=4, messages=8)
            if rng.random() < 0.02:
                logs.rotate(
                    rng.choice(["iis", "smtp_receive", "smtp_send", "message_tracking"]),
                    rng.choice(["rename", "copytruncate"]),
                )
            dc = rng.choice(lab.dcs)
            user = rng.choice(USERS[:4])
            method = rng.choice(["ldap", "kerberos", "smb"])
            lab.fail(method, user, dc)
            if time.monotonic() >= next_lockout:
                victim = rng.choice(USERS)
                print(f"locking out {victim} on {dc.name} ...", flush=True)
                lab.lock_out(victim, dc, method)
                # The PDC's 4740 for it, as from a phone on ActiveSync: no caller computer.
                events.logs["dc1.lab.example"].append_clone(4740, TargetUserName=victim, TargetDomainName="")
                next_lockout = time.monotonic() + 90
            for _ in range(20):
                if stopping:
                    break
                time.sleep(0.25)
        return 0
    finally:
        print("Stopping the exporter and tearing the lab down ...", flush=True)
        stop_process(exporter)
        if stand_in is not None:
            stand_in.stop()
        for endpoints in (exchange, events, smtp, directaccess):
            if endpoints is not None:
                endpoints.stop()
        lab.teardown()


def _serve_dc_events(dc: str, port: int) -> int:
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    server = dc_endpoint(dc, port, sample_log(dc), {}, HARDENED)
    server.start()
    print(f"listening on {server.address}:{port}", flush=True)
    stopped.wait()
    server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo")
    demo.add_argument("--port", type=int, default=9733)
    up = sub.add_parser("up")
    up.add_argument("directory", type=Path)
    down = sub.add_parser("down")
    down.add_argument("directory", type=Path)
    # One lab DC's hardened WinRM endpoint in a process of its own (the tests run it under a skewed clock); the
    # keys and NTLM users come from KRB5_KTNAME and NTLM_USER_FILE, as a running lab sets them.
    endpoint = sub.add_parser("dc-events-endpoint")
    endpoint.add_argument("dc", choices=sorted(DC_SAMPLES))
    endpoint.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args.port)
    if args.command == "dc-events-endpoint":
        return _serve_dc_events(args.dc, args.port)
    lab = SambaLab(args.directory)
    if args.command == "up":
        lab.provision()
        print(f"lab up in {lab.root}: DC1 {lab.dc1.address}, DC2 {lab.dc2.address}")
        return 0
    lab.teardown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
