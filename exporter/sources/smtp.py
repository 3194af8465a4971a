"""An SMTP probe (aiosmtplib): greeting, EHLO, STARTTLS and the certificate the server presents.

What a hybrid admin checks by hand with ``telnet host 25`` and ``openssl s_client -starttls smtp``: does the
server greet with 220 or refuse with 421, does it offer STARTTLS, and which certificate does it present -
subject (CN and O, what Exchange Online's inbound connector matches), SANs, issuer, expiry, fingerprint.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
from cryptography import x509

from exporter.parsers.smtp import SmtpReply, parse_reply
from exporter.parsers.x500 import certificate_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Certificate:
    subject: str  # as Windows writes it: "CN=mail.contoso.com, O=Contoso Ltd"
    common_name: str
    organization: str
    issuer: str
    sans: tuple[str, ...]
    not_after: float
    sha256: str


@dataclass
class SmtpProbe:
    success: bool = False
    failed_stage: str = ""  # connect, greeting, ehlo, starttls, tls, certificate
    error: str = ""
    greeting: SmtpReply | None = None
    greeting_text: str = ""
    capabilities: tuple[str, ...] = ()
    starttls_offered: bool = False
    tls_version: str = ""
    certificate: Certificate | None = None
    verified: bool | None = None  # None when verification was not asked for
    # The relay test's replies (MAIL FROM, RCPT TO), when it was asked for and got that far.
    relay_replies: dict[str, SmtpReply] = field(default_factory=dict)
    open_relay: bool | None = None  # None: not tested, or refused before RCPT could tell
    phases: dict[str, float] = field(default_factory=dict)
    duration: float = 0.0


def certificate_from_der(der: bytes) -> Certificate | None:
    """The server's certificate; None when cryptography cannot read it (TLS accepted it unverified: its parser is
    laxer, and this one reads the subject and extensions lazily, raising only then)."""
    try:
        cert = x509.load_der_x509_certificate(der)
        names = certificate_names(cert)
        try:
            sans = tuple(
                cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                    x509.DNSName
                )
            )
        except x509.ExtensionNotFound:
            sans = ()
        not_after = cert.not_valid_after_utc.timestamp()
    except ValueError as exc:
        log.warning("the server's certificate (sha256 %s) cannot be read: %s", hashlib.sha256(der).hexdigest(), exc)
        return None
    return Certificate(
        subject=names.subject,
        common_name=names.common_name,
        organization=names.organization,
        issuer=names.issuer,
        sans=sans,
        not_after=not_after,
        sha256=hashlib.sha256(der).hexdigest(),
    )


@functools.lru_cache(maxsize=16)
def tls_context(verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    """Built once and reused: loading the system's CAs costs more than a handshake."""
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # reading the certificate is the point; trust is checked apart
        return context
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


# The timeout is aiosmtplib's own, per step; asyncio.timeout around it would cut a conversation mid-reply.
async def probe_smtp(
    host: str,
    port: int,
    *,
    timeout: float,  # noqa: ASYNC109
    ehlo_hostname: str,
    starttls: bool,
    verify: bool = False,
    ca_file: Path | None = None,
    server_name: str | None = None,
    relay: tuple[str, str] | None = None,
) -> SmtpProbe:
    """One SMTP conversation up to the certificate; QUIT at the end. Nothing is sent beyond EHLO/STARTTLS, except
    with ``relay`` (MAIL FROM, RCPT TO): those two, then RSET. Never DATA."""
    result = SmtpProbe()
    started = time.monotonic()
    client = aiosmtplib.SMTP(
        hostname=host,
        port=port,
        timeout=timeout,
        local_hostname=ehlo_hostname,
        start_tls=False,
        use_tls=False,
        validate_certs=False,
    )
    stage = "connect"
    try:
        phase = time.monotonic()
        try:
            greeting = await client.connect()
        except aiosmtplib.SMTPConnectResponseError as exc:  # answered, but not with 220 (421 4.3.2 ...)
            result.greeting, result.greeting_text = parse_reply(f"{exc.code} {exc.message}"), exc.message
            result.failed_stage, result.error = "greeting", f"greeting {exc.code} {exc.message}"
            return result
        stage = "greeting"
        result.phases["connect"] = time.monotonic() - phase
        result.greeting, result.greeting_text = parse_reply(f"{greeting.code} {greeting.message}"), greeting.message
        phase, stage = time.monotonic(), "ehlo"
        await client.ehlo()
        result.phases["ehlo"] = time.monotonic() - phase
        result.capabilities = tuple(sorted(client.esmtp_extensions))
        result.starttls_offered = client.supports_extension("starttls")
        if starttls:
            stage = "starttls"
            if not result.starttls_offered:
                result.failed_stage, result.error = "starttls", "STARTTLS not offered"
                return result
            phase, stage = time.monotonic(), "tls"
            context = tls_context(verify, ca_file)
            try:
                await client.starttls(tls_context=context, server_hostname=server_name or host)
            except (aiosmtplib.SMTPConnectError, ssl.SSLCertVerificationError) as exc:
                cause = exc if isinstance(exc, ssl.SSLCertVerificationError) else exc.__cause__
                if not verify or not isinstance(cause, ssl.SSLCertVerificationError):
                    raise
                result.verified = False
                # Read the certificate anyway: a second conversation that does not verify it.
                retry = await probe_smtp(
                    host, port, timeout=timeout, ehlo_hostname=ehlo_hostname, starttls=True, server_name=server_name
                )
                retry.verified, retry.success = False, False
                retry.failed_stage, retry.error = "certificate", f"certificate not trusted: {cause.verify_message}"
                return retry
            result.phases["starttls"] = time.monotonic() - phase
            ssl_object = client.get_transport_info("ssl_object")
            if isinstance(ssl_object, ssl.SSLObject):
                result.tls_version = ssl_object.version() or ""
                der = ssl_object.getpeercert(binary_form=True)
                if der:
                    result.certificate = certificate_from_der(der)
            if verify:
                result.verified = True
        if relay is not None:
            stage = "relay"
            await _relay_test(client, result, *relay)
        result.success = True
        # QUIT said but its 221 not waited for (blackbox_exporter does not even say it): the reply tells nothing,
        # and waiting for it is a round trip on every probe.
        protocol = client.protocol
        if protocol is not None:
            with contextlib.suppress(OSError, RuntimeError):
                protocol.write(b"QUIT\r\n")
        return result
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
        result.failed_stage = result.failed_stage or stage
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        result.duration = time.monotonic() - started
        client.close()


def _reply(code: int, message: str) -> SmtpReply:
    return parse_reply(f"{code} {message}") or SmtpReply(str(code), "")


async def _relay_test(client: aiosmtplib.SMTP, result: SmtpProbe, mail_from: str, rcpt_to: str) -> None:
    """MAIL FROM, RCPT TO an outside address, RSET: an accepted RCPT is an open relay. Refusals are answers."""
    try:
        reply = await client.mail(mail_from)
    except aiosmtplib.SMTPResponseException as exc:
        result.relay_replies["mail_from"] = _reply(exc.code, exc.message)
        return
    result.relay_replies["mail_from"] = _reply(reply.code, reply.message)
    try:
        reply = await client.rcpt(rcpt_to)
        result.relay_replies["rcpt_to"] = _reply(reply.code, reply.message)
        result.open_relay = True
    except aiosmtplib.SMTPResponseException as exc:
        result.relay_replies["rcpt_to"] = _reply(exc.code, exc.message)
        result.open_relay = False if exc.code >= 500 else None  # a 4xx (greylisting, busy) decides nothing
    with contextlib.suppress(aiosmtplib.SMTPResponseException):
        await client.rset()
