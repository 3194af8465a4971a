"""An ActiveSync stand-in on an Exchange server's address, and a phone that talks to it: the lockout stories.

The stand-in takes ``POST /Microsoft-Server-ActiveSync?User=..&DeviceId=..&DeviceType=..&Cmd=Sync`` with Basic
auth, checks the password against a lab DC for real (an LDAP simple bind *from the Exchange server's address*, as
Exchange's front end does on behalf of the phone) and writes the IIS W3C line Exchange would: 200, or 401 with the
sc-win32-status the DC's answer implies (1326 for a wrong password, 1909 once the account is locked). So the
failures exist for real in Samba (badPwdCount on that DC, its audit log naming the Exchange server's address,
the lockout and its origin DC) and in the Exchange server's IIS log (the phone's address, DeviceId and type).
Samba's audit log records no lockout event, so with the lab's DC event endpoints the stand-in writes the PDC's
4740 Windows would, with no caller computer (the failures themselves are in Samba's audit log already).

A second story needs no stand-in: a service with a stale password binding from another loopback address
(``stale_service``).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlencode

import ldap3
from aiohttp import web

from lab import free_port
from lab.exchange_logs import PROTOCOL_STEMS, LogWriter
from lab.samba import DC, DOMAIN, SambaLab, ldaps_server
from lab.winevent import EventLab

PHONE_ADDRESS = "127.0.0.22"
SERVICE_ADDRESS = "127.0.0.23"
_BIND_DATA = re.compile(r"\bdata ([0-9a-f]+)\b", re.I)
# The AD bind error's sub-status -> the Win32 status IIS logs for the 401.
WIN32_OF_BIND = {"52e": "1326", "775": "1909", "533": "1331", "532": "1330", "701": "1793"}


class ActiveSyncStandIn:
    """The front end's /Microsoft-Server-ActiveSync, on ``address``, authenticating against ``dc``."""

    def __init__(self, lab: SambaLab, logs: LogWriter, dc: DC, events: EventLab | None = None) -> None:
        self.lab, self.logs, self.dc, self.address = lab, logs, dc, logs.address
        # The DCs' Security logs over WinRM, when the lab serves them: for the 4740 Samba does not log.
        self.events = events
        self._locked: set[str] = set()
        self.port = free_port(self.address)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def _check(self, user: str, password: str) -> str:
        """The DC's answer to the phone's credential, as the Win32 status IIS would log ("0" when it bound)."""
        server = ldaps_server(self.dc)
        conn = ldap3.Connection(
            server, f"{user}@{DOMAIN}", password, source_address=self.address, source_port=0, receive_timeout=10
        )
        try:
            if conn.bind():
                return "0"
            data = _BIND_DATA.search(str(conn.result.get("message", "")))
            win32 = WIN32_OF_BIND.get(data.group(1).lower(), "1326") if data else "1326"
        finally:
            conn.unbind()
        if self.events is not None:
            self._log_events(user, win32)
        return win32

    def _log_events(self, user: str, win32: str) -> None:
        """Once the account is locked, the PDC's 4740 with no caller computer (a phone is no domain computer)."""
        assert self.events is not None
        if win32 != "0" and user not in self._locked and self.lab.account(user, self.dc)["uac_computed"] & 0x10:
            self._locked.add(user)
            self.events.logs[self.lab.dc1.host].append_clone(4740, TargetUserName=user, TargetDomainName="")

    async def _sync(self, request: web.Request) -> web.Response:
        query = {k: v[0] for k, v in parse_qs(request.query_string).items()}
        header = request.headers.get("Authorization", "")
        user, password = "", ""
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode("utf-8", "replace").partition(":")
        user = user.rpartition("\\")[2] or query.get("User", "")
        win32 = await asyncio.to_thread(self._check, user, password) if user else "1326"
        status, substatus = ("200", "0") if win32 == "0" else ("401", "1")
        self.logs.log_request(
            stem=PROTOCOL_STEMS["activesync"],
            query=urlencode(query),
            username=f"LAB\\{user}" if status == "200" else "-",
            client_ip=request.remote or "",
            user_agent=request.headers.get("User-Agent", "-"),
            status=status,
            substatus=substatus,
            win32=win32,
            server_ip=self.address,
        )
        if status == "200":
            return web.Response(text="OK\n")
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="lab"'}, text="Unauthorized\n")

    def start(self) -> None:
        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post(PROTOCOL_STEMS["activesync"], self._sync)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.TCPSite(self._runner, self.address, self.port).start())
            self._started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="activesync-stand-in", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the ActiveSync stand-in did not start")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


@contextmanager
def activesync(lab: SambaLab, logs: LogWriter, dc: DC, events: EventLab | None = None) -> Iterator[ActiveSyncStandIn]:
    stand_in = ActiveSyncStandIn(lab, logs, dc, events)
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


def phone_sync(
    stand_in: ActiveSyncStandIn,
    user: str,
    password: str,
    device_id: str = "ApplF17XYZ0001",
    device_type: str = "iPhone",
    address: str = PHONE_ADDRESS,
) -> int:
    """One Sync from the phone at ``address``; the HTTP status the stand-in answered."""
    query = urlencode({"User": user, "DeviceId": device_id, "DeviceType": device_type, "Cmd": "Sync"})
    token = base64.b64encode(f"LAB\\{user}:{password}".encode()).decode()
    conn = http.client.HTTPConnection(stand_in.address, stand_in.port, timeout=15, source_address=(address, 0))
    try:
        conn.request(
            "POST",
            f"{PROTOCOL_STEMS['activesync']}?{query}",
            headers={"Authorization": f"Basic {token}", "User-Agent": "Apple-iPhone14C2/2008.130"},
        )
        return conn.getresponse().status
    finally:
        conn.close()


def stale_service(lab: SambaLab, user: str, dc: DC, times: int, address: str = SERVICE_ADDRESS) -> None:
    """A service on another machine binding with a password that was changed since: ``times`` failures."""
    for _ in range(times):
        server = ldaps_server(dc)
        conn = ldap3.Connection(
            server, f"{user}@{DOMAIN}", "the-old-password", source_address=address, source_port=0, receive_timeout=10
        )
        conn.bind()
        conn.unbind()
