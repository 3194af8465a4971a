"""A real IMAP server (Dovecot, from Debian) on a loopback address, holding the canary mailbox.

It runs in the foreground from a configuration of its own in the lab directory (nothing in /etc is used or
changed) and serves one Maildir; the lab's cloud relay delivers into it. Plain IMAP with a password is fine here
because it never leaves loopback.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from lab import free_port, stop_process

USER = "canary"


class ImapLab:
    def __init__(self, directory: Path | None = None, address: str = "127.0.0.21") -> None:
        # Dovecot's processes run as the dovecot user, which must reach every directory above the mail: a
        # directory of its own under /tmp (the test's own directories are private to root).
        self.directory = Path(tempfile.mkdtemp(prefix="lab-imap-"))
        self.directory.chmod(0o711)
        self.address = address
        self.port = free_port(address)
        self.password = secrets.token_urlsafe(16)
        # The exporter's copy of the password (the test's directory, or dovecot's own).
        self.password_file = (directory or self.directory) / "imap.password"
        self.maildir = self.directory / "mail" / USER / "Maildir"
        self._process: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        d = self.directory
        # The password file dovecot reads as its own user; nothing else in here is secret.
        for sub in ("run", "state", "mail"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("new", "cur", "tmp"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        owner = pwd.getpwnam("dovecot")
        for path in [d / "mail", *(d / "mail").rglob("*")]:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        self.password_file.parent.mkdir(parents=True, exist_ok=True)
        self.password_file.write_text(self.password)
        self.password_file.chmod(0o600)
        users = d / "users"
        users.write_text(f"{USER}:{{PLAIN}}{self.password}\n")
        os.chown(users, owner.pw_uid, owner.pw_gid)
        users.chmod(0o600)
        config = d / "dovecot.conf"
        config.write_text(f"""\
protocols = imap
listen = {self.address}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{d}/mail/%u/Maildir
# The mailbox belongs to the dovecot system user (uid below 500): allow it for this lab server.
first_valid_uid = {pwd.getpwnam("dovecot").pw_uid}
last_valid_uid = {pwd.getpwnam("dovecot").pw_uid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {self.address}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
""")
        return config

    def start(self) -> ImapLab:
        binary = shutil.which("dovecot")
        if binary is None:
            raise RuntimeError("dovecot is not installed (./run.sh installs dovecot-imapd)")
        config = self._write_config()
        self._process = subprocess.Popen(
            [binary, "-F", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "dovecot.stderr").open("w"),
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.address, self.port), timeout=1):
                    return self
            except OSError:
                if self._process.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dovecot did not start: {(self.directory / 'dovecot.stderr').read_text()[-2000:]}")

    def stop(self) -> None:
        stop_process(self._process)
        self._process = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def config(self, password_file: Path | None = None) -> dict[str, object]:
        """The exporter's ``imap`` entry for this mailbox (plain IMAP: the lab never leaves loopback)."""
        return {
            "host": self.address,
            "port": self.port,
            "security": "none",
            "allow_unencrypted": True,
            "user": USER,
            "password_file": str(password_file or self.password_file),
        }

    def deliver(self, content: bytes) -> None:
        """Drop a message into the mailbox the way a local delivery agent does (tmp, then new)."""
        name = f"{time.time():.6f}.{secrets.token_hex(6)}.lab"
        partial, final = self.maildir / "tmp" / name, self.maildir / "new" / name
        partial.write_bytes(content)
        owner = pwd.getpwnam("dovecot")
        os.chown(partial, owner.pw_uid, owner.pw_gid)
        partial.rename(final)

    def __enter__(self) -> ImapLab:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
