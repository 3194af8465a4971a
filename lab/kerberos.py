"""The lab domain's Kerberos for WinRM: service principals and keytabs for the lab's remoting hosts.

Each host that answers PowerShell remoting (the Exchange servers, the DCs' WinRM) gets what a domain-joined
Windows server has: an enabled computer account with AES keys and ``HTTP/<host>`` among its service
principal names (``samba-tool spn add``), whose keys are exported from the domain (``samba-tool domain
exportkeytab``) into the keytab the lab's acceptors read. The exporter's remoting account is a domain user;
its keytab can be exported too, for the keytab tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from lab.samba import BASE_DN, NETBIOS, REALM, SambaLab

REMOTING_ACCOUNT = "svc_remoting"
REMOTING_PASSWORD = "Lab-Remoting-Pass1!"  # a throwaway lab domain on loopback only
_AES_ONLY = 0x18  # msDS-SupportedEncryptionTypes: AES128 and AES256, as Windows Server 2025 defaults to


class LabKerberos:
    """Service principals, keytabs and the environment the lab's acceptors and the exporter use."""

    def __init__(self, samba: SambaLab) -> None:
        self.samba = samba
        self.directory = samba.root / "kerberos"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keytab = self.directory / "http.keytab"
        self.ntlm_users = self.directory / "ntlm-users"
        self.password_file = self.directory / f"{REMOTING_ACCOUNT}.password"
        self.hosts: set[str] = set()
        self.users: dict[str, str] = {}

    @property
    def krb5_conf(self) -> Path:
        return self.samba.krb5_conf(self.samba.dc1)

    @property
    def principal(self) -> str:
        return f"{REMOTING_ACCOUNT}@{REALM}"

    def provision(self, hosts: list[str]) -> LabKerberos:
        """The remoting account, and an HTTP/<host> principal with its keys in the keytab for each host."""
        if REMOTING_ACCOUNT not in self.users:
            self.add_user(REMOTING_ACCOUNT, REMOTING_PASSWORD)
            self.password_file.write_text(REMOTING_PASSWORD)
            self.password_file.chmod(0o600)
        for host in hosts:
            if host not in self.hosts:
                self._add_host(host)
        self.activate()
        return self

    def add_user(self, name: str, password: str) -> None:
        self.samba.create_user(name, password)
        self.users[name] = password
        self.ntlm_users.write_text("".join(f"{NETBIOS}:{u}:{p}\n" for u, p in self.users.items()))
        self.ntlm_users.chmod(0o600)

    def _add_host(self, host: str) -> None:
        short = host.split(".", 1)[0].upper()[:15]
        if not host.startswith(tuple(dc.host for dc in self.samba.dcs)):
            # A member server's computer account, enabled, with a password so that it has keys to export.
            self.samba.samba_tool("computer", "create", short)
            self.samba.samba_tool("user", "setpassword", f"{short}$", f"--newpassword=Lab-Host-{short}-Pass1!")
            dn = f"CN={short},CN=Computers,{BASE_DN}"
            conn = self.samba.admin_connection(self.samba.dc1)
            conn.modify(
                dn,
                {
                    "userAccountControl": [("MODIFY_REPLACE", ["4096"])],  # WORKSTATION_TRUST_ACCOUNT, enabled
                    "msDS-SupportedEncryptionTypes": [("MODIFY_REPLACE", [str(_AES_ONLY)])],
                },
            )
            conn.unbind()
        self.samba.samba_tool("spn", "add", f"HTTP/{host}", f"{short}$")
        self._export(f"HTTP/{host}", self.keytab)
        self.hosts.add(host)

    def client_keytab(self, user: str = REMOTING_ACCOUNT) -> Path:
        """A keytab with the user's own keys, as ``ktpass`` or ``samba-tool domain exportkeytab`` writes one."""
        path = self.directory / f"{user}.keytab"
        path.unlink(missing_ok=True)
        self._export(f"{user}@{REALM}", path)
        return path

    def _export(self, principal: str, keytab: Path) -> None:
        # exportkeytab replaces the file: export alone, then merge with what the keytab already holds.
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            single = Path(tmp) / "one.keytab"
            self.samba.samba_tool("domain", "exportkeytab", str(single), f"--principal={principal}")
            if not single.exists():
                raise RuntimeError(f"samba-tool exported no keys for {principal}")
            if not keytab.exists():
                shutil.copyfile(single, keytab)
            else:
                merged = Path(tmp) / "merged.keytab"
                script = f"rkt {keytab}\nrkt {single}\nwkt {merged}\nq\n"
                subprocess.run(["ktutil"], input=script, text=True, capture_output=True, check=True, timeout=30)
                shutil.copyfile(merged, keytab)
        keytab.chmod(0o600)

    def auth_config(self, method: str = "kerberos", key: str = "password") -> dict[str, Any]:
        """The exporter's remoting ``auth`` for the lab account: kerberos with its key from a password, a keytab
        or a credential cache (a kinit into a file), or ntlm."""
        if method == "ntlm":
            return {
                "method": "ntlm",
                "user": f"{NETBIOS}\\{REMOTING_ACCOUNT}",
                "password_file": str(self.password_file),
            }
        if key == "keytab":
            return {"method": "kerberos", "user": self.principal, "keytab_file": str(self.client_keytab())}
        if key == "cache":
            return {"method": "kerberos", "user": self.principal, "credential_cache": self.kinit()}
        return {"method": "kerberos", "user": self.principal, "password_file": str(self.password_file)}

    def kinit(self, user: str = REMOTING_ACCOUNT) -> str:
        """A file credential cache with the user's TGT, as kinit (or k5start, sssd) leaves one."""
        cache = f"FILE:{self.directory / f'krb5cc_{user}'}"
        subprocess.run(
            ["kinit", f"{user}@{REALM}"],
            input=self.users[user] + "\n",
            env={**os.environ, "KRB5_CONFIG": str(self.krb5_conf), "KRB5CCNAME": cache},
            text=True,
            capture_output=True,
            check=True,
            timeout=30,
        )
        return cache

    def environment(self) -> dict[str, str]:
        """What a process needs to reach the lab KDC and, for the acceptors, the service keys."""
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KTNAME": f"FILE:{self.keytab}",
            "NTLM_USER_FILE": str(self.ntlm_users),
        }

    def activate(self) -> None:
        """In this process: the acceptors read the keytab and NTLM users, and clients find the lab KDC."""
        os.environ.update(self.environment())
