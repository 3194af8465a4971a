"""A thin IMAP client (imaplib, run from a worker thread): the header blocks of messages new since a UID.

The mailbox is opened read-only and headers are fetched with BODY.PEEK, so nothing is marked read or changed.
A bookmark is (UIDVALIDITY, last UID): when the server renumbers the mailbox (a new UIDVALIDITY) everything in
it is new again.
"""

from __future__ import annotations

import contextlib
import imaplib
import ssl
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

from exporter.config import ImapConfig
from exporter.sources.pool import SourceError
from exporter.sources.smtp import tls_context

_BATCH = 200


class ImapError(SourceError):
    """A mailbox could not be read."""


@dataclass(frozen=True)
class ImapTarget:
    host: str
    port: int
    security: Literal["tls", "starttls", "none"]
    user: str
    password: SecretStr
    mailbox: str
    context: ssl.SSLContext | None
    timeout: float


def target_from(config: ImapConfig) -> ImapTarget:
    assert config.user is not None and config.password is not None
    context = tls_context(config.verify, config.ca_file) if config.security != "none" else None
    return ImapTarget(
        config.host,
        config.effective_port,
        config.security,
        config.user,
        config.password,
        config.mailbox,
        context,
        config.timeout_seconds,
    )


def fetch_new_headers(target: ImapTarget, validity: int, last_uid: int) -> tuple[int, int, list[bytes]]:
    """(UIDVALIDITY, highest UID seen, header blocks of the messages after ``last_uid``)."""
    try:
        if target.security == "tls":
            client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                target.host, target.port, ssl_context=target.context, timeout=target.timeout
            )
        else:
            client = imaplib.IMAP4(target.host, target.port, timeout=target.timeout)
            if target.security == "starttls":
                client.starttls(ssl_context=target.context)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ImapError("unreachable", f"cannot connect to {target.host}:{target.port}: {exc}") from None
    try:
        try:
            client.login(target.user, target.password.get_secret_value())
        except imaplib.IMAP4.error:
            raise ImapError("auth_failed", f"login refused for {target.user}") from None
        typ, data = client.select(_quote(target.mailbox), readonly=True)
        if typ != "OK":
            raise ImapError("mailbox", f"cannot open mailbox {target.mailbox!r}: {data}")
        typ, data = client.response("UIDVALIDITY")
        current_validity = int(data[0]) if typ == "OK" and data and data[0] else 0
        if current_validity != validity:
            last_uid = 0
        typ, data = client.uid("SEARCH", f"UID {last_uid + 1}:*")
        uids = sorted(int(u) for u in (data[0] or b"").split() if int(u) > last_uid) if typ == "OK" else []
        headers: list[bytes] = []
        for start in range(0, len(uids), _BATCH):
            batch = ",".join(str(u) for u in uids[start : start + _BATCH])
            typ, data = client.uid("FETCH", batch, "(BODY.PEEK[HEADER])")
            if typ != "OK":
                raise ImapError("fetch", f"FETCH failed: {data}")
            for part in data:
                if isinstance(part, tuple) and len(part) == 2 and isinstance(part[1], bytes):
                    headers.append(part[1])
        return current_validity, max([last_uid, *uids]), headers
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ImapError("protocol_error", f"{type(exc).__name__}: {exc}") from None
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            client.logout()


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'
