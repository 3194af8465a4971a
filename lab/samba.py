"""A real two-DC Samba Active Directory domain on loopback addresses, for the demo and the tests.

DC1 (the PDC emulator) on 127.0.0.2, DC2 joined to the same domain on 127.0.0.6. Every Samba process
and every samba-tool call that resolves names runs in its own mount namespace whose /etc/resolv.conf and
/etc/hosts name only the lab DCs, so no lookup ever leaves the machine and the host's files stay as they are.
The failed logons are real: LDAP simple binds, Kerberos AS requests (kinit) and SMB session setups.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ldap3

from exporter.sources.ldap import ContextTls

REALM = "LAB.EXAMPLE"
DOMAIN = "lab.example"
NETBIOS = "LAB"
BASE_DN = "DC=lab,DC=example"
ADMIN_PASSWORD = "Lab-Admin-Pass1!"  # a throwaway lab domain on loopback only
USER_PASSWORD = "Lab-User-Pass1!"
SERVICE_ACCOUNT = "svc_exporter"
SERVICE_PASSWORD = "Lab-Svc-Pass1!"
UF_LOCKOUT_BIT = 0x10  # msDS-User-Account-Control-Computed: locked out
USERS = ("alice", "bob", "carol", "dave", "svc_backup", "svc_sql")


@dataclass(frozen=True)
class DC:
    name: str  # DC1
    address: str  # 127.0.0.2
    directory: Path

    @property
    def host(self) -> str:
        return f"{self.name.lower()}.{DOMAIN}"

    @property
    def conf(self) -> Path:
        return self.directory / "etc" / "smb.conf"

    @property
    def pid_file(self) -> Path:
        return self.directory / "run" / "samba.pid"

    @property
    def auth_log(self) -> Path:
        return self.directory / "log" / "auth_json.log"

    @property
    def ca_file(self) -> Path:
        return self.directory / "private" / "tls" / "ca.pem"


def ldaps_server(dc: DC) -> ldap3.Server:
    """The DC over LDAPS, checked against its own CA: the lab's DCs take simple binds over TLS only, as hardened
    ones do (``ldap server require strong auth = yes``), so every failed logon the lab makes goes this way."""
    tls = ContextTls(dc.host, dc.ca_file, verify=True)
    return ldap3.Server(dc.address, port=636, use_ssl=True, tls=tls, get_info=ldap3.NONE, connect_timeout=5)


class SambaLab:
    def __init__(
        self,
        root: Path | None = None,
        *,
        lockout_threshold: int = 3,
        lockout_duration: float = 15.0,
        observation_window: float = 15.0,
    ) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="ad-exchange-lab-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.dc1 = DC("DC1", "127.0.0.2", self.root / "dc1")
        self.dc2 = DC("DC2", "127.0.0.6", self.root / "dc2")
        self.threshold = lockout_threshold
        self.duration = lockout_duration
        self.window = observation_window
        self.resolv_conf = self.root / "resolv.conf"
        self.hosts = self.root / "hosts"
        self.ca_bundle = self.root / "ca-bundle.pem"
        self.service_password_file = self.root / "svc_exporter.password"

    @property
    def dcs(self) -> tuple[DC, DC]:
        return (self.dc1, self.dc2)

    # --- running commands ------------------------------------------------------------------------------

    def _in_namespace(self, command: list[str]) -> list[str]:
        inner = (
            f"mount --bind {shlex.quote(str(self.resolv_conf))} /etc/resolv.conf && "
            f"mount --bind {shlex.quote(str(self.hosts))} /etc/hosts && exec {shlex.join(command)}"
        )
        return ["unshare", "--mount", "sh", "-c", inner]

    def run(
        self,
        command: list[str],
        *,
        namespace: bool = False,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        argv = self._in_namespace(command) if namespace else command
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(command)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
        return result

    # --- life cycle -----------------------------------------------------------------------------------

    def _common_options(self, dc: DC) -> list[str]:
        d = dc.directory
        return [
            f"--option=interfaces={dc.address}/30",
            "--option=bind interfaces only=yes",
            f"--option=pid directory={d}/run",
            f"--option=ncalrpc dir={d}/run/ncalrpc",
            f"--option=winbindd socket directory={d}/run/winbindd",
            f"--option=log file={d}/log/%m.log",
        ]

    def _finish_conf(self, dc: DC) -> None:
        """Settings samba-tool does not write: no DNS forwarding off the machine, strong auth, auth audit."""
        (dc.directory / "log").mkdir(parents=True, exist_ok=True)
        lines = [ln for ln in dc.conf.read_text().splitlines() if "dns forwarder" not in ln]
        at = lines.index("[global]") + 1
        lines[at:at] = [
            # The strictest Samba has (its default): simple binds over TLS only, SASL on 389 signed or sealed.
            "\tldap server require strong auth = yes",
            # A reset password stops working at once (Samba keeps the old one for NTLM/simple binds an hour).
            "\told password allowed period = 0",
            f"\tlog level = 1 auth_audit:3 auth_json_audit:3@{dc.auth_log}",
        ]
        dc.conf.write_text("\n".join(lines) + "\n")

    def _check_addresses_free(self) -> None:
        for dc in self.dcs:
            with socket.socket() as sock:
                sock.settimeout(1)
                if sock.connect_ex((dc.address, 389)) == 0:
                    raise RuntimeError(
                        f"something already listens on {dc.address}:389 (another lab still running?); "
                        "stop it first, e.g. python -m lab down DIR"
                    )

    def provision(self) -> None:
        self._check_addresses_free()
        self.resolv_conf.write_text(f"nameserver {self.dc1.address}\n")
        self.hosts.write_text(
            "127.0.0.1 localhost\n" + "".join(f"{dc.address} {dc.host} {dc.name.lower()}\n" for dc in self.dcs)
        )
        self.run(
            [
                "samba-tool",
                "domain",
                "provision",
                "--use-rfc2307",
                f"--realm={REALM}",
                f"--domain={NETBIOS}",
                "--server-role=dc",
                "--dns-backend=SAMBA_INTERNAL",
                f"--adminpass={ADMIN_PASSWORD}",
                f"--targetdir={self.dc1.directory}",
                "--host-name=dc1",
                f"--host-ip={self.dc1.address}",
                *self._common_options(self.dc1),
            ],
            namespace=True,
        )
        self._finish_conf(self.dc1)
        self.start(self.dc1)
        self.set_policy()
        for user in USERS:
            self.samba_tool("user", "create", user, USER_PASSWORD)
        self.samba_tool("user", "create", SERVICE_ACCOUNT, SERVICE_PASSWORD)
        self.service_password_file.write_text(SERVICE_PASSWORD)
        self.service_password_file.chmod(0o600)
        self.run(
            [
                "samba-tool",
                "domain",
                "join",
                DOMAIN,
                "DC",
                f"--targetdir={self.dc2.directory}",
                f"--server={self.dc1.address}",
                "--dns-backend=SAMBA_INTERNAL",
                "--option=netbios name=DC2",
                f"-U{NETBIOS}\\Administrator%{ADMIN_PASSWORD}",
                *self._common_options(self.dc2),
            ],
            namespace=True,
        )
        self._finish_conf(self.dc2)
        # The join adds no DNS records for the new DC; replication needs its A record and _msdcs alias.
        self._dns_add(DOMAIN, "dc2", "A", self.dc2.address)
        guid = self._ntds_guid(self.dc2)
        self._dns_add(f"_msdcs.{DOMAIN}", guid, "CNAME", self.dc2.host)
        self.start(self.dc2)
        # The join wrote DC2's service principal names on DC2; DC1's KDC needs them for Kerberos to DC2.
        self.replicate(self.dc1, self.dc2)
        self.ca_bundle.write_text(self.dc1.ca_file.read_text() + self.dc2.ca_file.read_text())
        for dc in self.dcs:
            self.krb5_conf(dc).write_text(
                f"[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n"
                # No canonicalisation: the host's resolver must never be asked for lab names.
                f" rdns = false\n dns_canonicalize_hostname = false\n"
                f"[realms]\n {REALM} = {{\n  kdc = {dc.address}\n }}\n"
            )

    def krb5_conf(self, dc: DC) -> Path:
        """A krb5.conf whose only KDC is this DC, so a kinit's failure lands on the DC we choose."""
        return self.root / f"krb5-{dc.name.lower()}.conf"

    def _dns_add(self, zone: str, name: str, kind: str, value: str) -> None:
        self.run(
            [
                "samba-tool",
                "dns",
                "add",
                self.dc1.address,
                zone,
                name,
                kind,
                value,
                f"-U{NETBIOS}\\Administrator%{ADMIN_PASSWORD}",
            ]
        )

    def _ntds_guid(self, dc: DC) -> str:
        conn = self.admin_connection(self.dc1)
        conn.search(
            f"CN=NTDS Settings,CN={dc.name},CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration,{BASE_DN}",
            "(objectClass=*)",
            search_scope=ldap3.BASE,
            attributes=["objectGUID"],
        )
        return str(conn.entries[0].objectGUID.value).strip("{}")

    def start(self, dc: DC, wait: float = 30) -> None:
        if self.is_running(dc):
            return
        self.run(["samba", "-s", str(dc.conf), "-D"], namespace=True)
        # Samba answers plain LDAP before it has written its TLS certificate: wait for LDAPS too.
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if dc.ca_file.exists():
                    context = ssl.create_default_context(cafile=str(dc.ca_file))
                    with (
                        socket.create_connection((dc.address, 636), timeout=3) as raw,
                        context.wrap_socket(raw, server_hostname=dc.host),
                    ):
                        self.admin_connection(dc).unbind()
                        return
            time.sleep(0.3)
        raise RuntimeError(f"{dc.name} did not answer LDAPS within {wait}s; see {dc.directory / 'log'}")

    def pid(self, dc: DC) -> int | None:
        try:
            return int(dc.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def is_running(self, dc: DC) -> bool:
        pid = self.pid(dc)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, dc: DC, wait: float = 15) -> None:
        pid = self.pid(dc)
        if pid is None or not self.is_running(dc):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGCONT)  # a paused DC cannot stop
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self.is_running(dc):
            time.sleep(0.2)
        if self.is_running(dc):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        # Children of the samba root process may linger for a moment after it exits.
        self.run(["pkill", "-KILL", "-f", f"samba -s {dc.conf}"], check=False)

    def pause(self, dc: DC) -> None:
        """Freeze the DC: it keeps its sockets open but answers nothing (a hung DC)."""
        pid = self.pid(dc)
        if pid is not None:
            os.killpg(os.getpgid(pid), signal.SIGSTOP)

    def resume(self, dc: DC) -> None:
        pid = self.pid(dc)
        if pid is not None:
            os.killpg(os.getpgid(pid), signal.SIGCONT)

    def teardown(self, remove: bool = True) -> None:
        for dc in self.dcs:
            self.stop(dc)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- directory administration ----------------------------------------------------------------------

    def samba_tool(self, *args: str) -> str:
        return self.run(["samba-tool", *args, "-s", str(self.dc1.conf)]).stdout

    def set_policy(
        self, threshold: int | None = None, duration: float | None = None, window: float | None = None
    ) -> None:
        """Set the domain lockout policy in seconds (samba-tool only takes whole minutes)."""
        self.threshold = threshold if threshold is not None else self.threshold
        self.duration = duration if duration is not None else self.duration
        self.window = window if window is not None else self.window
        conn = self.admin_connection(self.dc1)
        conn.modify(
            BASE_DN,
            {
                "lockoutThreshold": [(ldap3.MODIFY_REPLACE, [str(self.threshold)])],
                "lockoutDuration": [(ldap3.MODIFY_REPLACE, [str(-int(self.duration * 10_000_000))])],
                "lockOutObservationWindow": [(ldap3.MODIFY_REPLACE, [str(-int(self.window * 10_000_000))])],
            },
        )
        if conn.result["result"] != 0:
            raise RuntimeError(f"setting the lockout policy failed: {conn.result}")
        conn.unbind()

    def create_user(self, name: str, password: str = USER_PASSWORD) -> str:
        """Create on DC1 and replicate to DC2 at once, so both DCs know the account."""
        self.samba_tool("user", "create", name, password)
        self.replicate(self.dc2, self.dc1)
        return name

    def unlock(self, user: str) -> None:
        self.samba_tool("user", "unlock", user)

    def set_password(self, user: str, password: str, *, changes: int = 1) -> None:
        """An administrator's reset on DC1, replicated to DC2 at once (pwdLastSet moves on both).

        ``changes`` > 1 sets that many passwords in a row, ``password`` last. Like Windows, Samba does not count a
        bad password that is one of the last two in the account's history (the N-2 check): a device left with
        the password from before only locks the account out once two more changes have pushed it out of them.
        """
        for n in range(changes - 1):
            self.samba_tool("user", "setpassword", user, f"--newpassword={password}-{n}")
        self.samba_tool("user", "setpassword", user, f"--newpassword={password}")
        self.replicate(self.dc2, self.dc1)

    def replicate(self, destination: DC, source: DC) -> None:
        """Pull the domain partition from ``source`` into ``destination`` now.

        --local writes straight into the destination's database: right after a join the destination's
        inbound neighbour for the new DC is not usable yet (DsReplicaSync answers WERR_FILE_NOT_FOUND).
        """
        self.run(
            [
                "samba-tool",
                "drs",
                "replicate",
                destination.host,
                source.host,
                BASE_DN,
                "--local",
                "-s",
                str(destination.conf),
                f"-U{NETBIOS}\\Administrator%{ADMIN_PASSWORD}",
            ],
            namespace=True,
        )

    def admin_connection(self, dc: DC) -> ldap3.Connection:
        server = ldaps_server(dc)
        return ldap3.Connection(server, f"Administrator@{DOMAIN}", ADMIN_PASSWORD, auto_bind=True, receive_timeout=10)

    def account(self, user: str, dc: DC) -> dict[str, int]:
        """Ground truth as the DC holds it: badPwdCount, lockoutTime (FILETIME), computed UAC."""
        conn = self.admin_connection(dc)
        conn.search(
            BASE_DN,
            f"(sAMAccountName={user})",
            attributes=["badPwdCount", "lockoutTime", "msDS-User-Account-Control-Computed"],
        )
        raw = conn.response[0]["raw_attributes"]
        conn.unbind()

        def number(name: str) -> int:
            values = raw.get(name) or [b"0"]
            return int(values[0])

        return {
            "badPwdCount": number("badPwdCount"),
            "lockoutTime": number("lockoutTime"),
            "uac_computed": number("msDS-User-Account-Control-Computed"),
        }

    # --- real failed logons --------------------------------------------------------------------------------

    def fail_ldap(self, user: str, dc: DC, password: str = "wrong-password") -> str:
        conn = ldap3.Connection(ldaps_server(dc), f"{user}@{DOMAIN}", password)
        conn.bind()
        message = str(conn.result.get("message", ""))
        conn.unbind()
        return message

    def fail_kerberos(self, user: str, dc: DC, password: str = "wrong-password") -> str:
        cache = self.root / f"krb5cc-{user}"
        result = subprocess.run(
            ["kinit", f"{user}@{REALM}"],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "KRB5_CONFIG": str(self.krb5_conf(dc)), "KRB5CCNAME": f"FILE:{cache}"},
        )
        return result.stderr.strip()

    def fail_smb(self, user: str, dc: DC, password: str = "wrong-password") -> str:
        result = subprocess.run(
            [
                "smbclient",
                f"//{dc.address}/netlogon",
                f"-U{NETBIOS}\\{user}%{password}",
                "--use-kerberos=off",
                "-c",
                "ls",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return (result.stdout + result.stderr).strip().splitlines()[-1] if (result.stdout + result.stderr) else ""

    def fail(self, method: str, user: str, dc: DC) -> str:
        return {"ldap": self.fail_ldap, "kerberos": self.fail_kerberos, "smb": self.fail_smb}[method](user, dc)

    def lock_out(self, user: str, dc: DC, method: str = "ldap") -> None:
        for _ in range(self.threshold):
            self.fail(method, user, dc)
