"""How the lab's WinRM endpoints authenticate: as hardened Windows servers do, with pyspnego's acceptors.

Kerberos tickets are checked against a keytab exported from the lab's Samba domain (the service keys of
``HTTP/<host>``); NTLM against the lab users' passwords (a standalone acceptor: Windows would pass the NTLM
exchange on to a DC). After authentication every message body on HTTP must be encrypted with the
authenticated context (MS-WSMV 2.2.9.1, ``multipart/encrypted``): a plain body is answered with HTTP 500, as
WinRM does with ``AllowUnencrypted=false``. On HTTPS, Extended Protection requires the token to be bound to the
TLS channel (RFC 5929 ``tls-server-end-point``) and refuses it otherwise.
"""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import spnego
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from spnego.channel_bindings import GssChannelBindings

# What each mechanism's token starts with (RFC 2743 3.1 framing and the mechanism's OID, or NTLM's signature).
_KERBEROS_OID = bytes.fromhex("06092a864886f712010202")  # 1.2.840.113554.1.2.2
_SPNEGO_OID = bytes.fromhex("06062b0601050502")  # 1.3.6.1.5.5.2
GSS_C_CHANNEL_BOUND_FLAG = 2048  # MIT krb5: the initiator's bindings matched the acceptor's
GSS_S_BAD_BINDINGS = 4 << 16  # RFC 2744 routine error 4
KRB5KRB_AP_ERR_SKEW = 2529638912 + 37  # ERROR_TABLE_BASE_krb5 + RFC 4120's 37, as gssapi's unsigned minor code
PROTOCOLS = (
    "application/HTTP-SPNEGO-session-encrypted",
    "application/HTTP-Kerberos-session-encrypted",
)
_BOUNDARY = "Encrypted Boundary"


def tls_server_end_point(certificate_der: bytes) -> bytes:
    """The channel binding application data of RFC 5929 4.1: the certificate's hash with its own signature's
    hash function, SHA-256 for MD5 and SHA-1."""
    certificate = x509.load_der_x509_certificate(certificate_der)
    algorithm = certificate.signature_hash_algorithm
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate_der)
    return b"tls-server-end-point:" + digest.finalize()


def token_mechanism(token: bytes) -> str:
    """kerberos, ntlm or negotiate (SPNEGO, which may carry either): what an HTTP Negotiate token holds."""
    if token.startswith(b"NTLMSSP\x00"):
        return "ntlm"
    if token[:1] == b"\x60":
        # [APPLICATION 0] with a short or long length, then the mechanism's OID.
        length_bytes = token[1] & 0x7F if token[1] & 0x80 else 0
        oid = token[2 + length_bytes :]
        if oid.startswith(_KERBEROS_OID):
            return "kerberos"
        if oid.startswith(_SPNEGO_OID):
            return "negotiate"
    if token[:1] == b"\xa1":  # a NegTokenResp: the later legs of SPNEGO
        return "negotiate"
    return "unknown"


@dataclass
class AuthPolicy:
    """What one endpoint accepts. ``mechanisms`` by path: kerberos, ntlm, basic."""

    mechanisms: dict[str, tuple[str, ...]]
    # HTTPS: a Negotiate/Kerberos token must carry the channel binding (CbtHardeningLevel=Strict, Exchange's EP).
    extended_protection: bool = False
    # The certificate whose binding the server expects, when it is not the one clients see (a TLS offloader).
    binding_certificate: bytes | None = None
    allow_unencrypted: bool = False  # HTTP: plain bodies after authentication (WinRM's AllowUnencrypted)


@dataclass
class Session:
    """One authenticated connection (HTTP authentication in WinRM is per connection)."""

    user: str
    mechanism: str  # kerberos, ntlm, basic
    context: Any = None  # the pyspnego acceptor, for message encryption; None for Basic


@dataclass
class Connection:
    """What one client connection has negotiated so far."""

    pending: Any = None  # an acceptor still exchanging tokens
    session: Session | None = None
    tls_binding: bytes | None = None  # the channel binding data of this connection's TLS, when on HTTPS


@dataclass
class Refusals:
    """Why the endpoint refused, for the tests: reason -> count."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1


def accept(
    connection: Connection, policy: AuthPolicy, path: str, token: bytes, refusals: Refusals
) -> tuple[bool, bytes | None]:
    """Step the connection's acceptor with the client's token. Returns (authenticated, token for the client);
    (False, None) is a refusal, (False, token) a leg still to come."""
    allowed = policy.mechanisms.get(path, ())
    context = connection.pending
    if context is None:
        mechanism = token_mechanism(token)
        if mechanism == "unknown" or (mechanism != "negotiate" and mechanism not in allowed):
            refusals.add(f"mechanism_{mechanism}")
            return False, None
        bindings = None
        if policy.extended_protection and connection.tls_binding is not None:
            bindings = GssChannelBindings(application_data=policy_binding(policy, connection))
        context = spnego.server(protocol="negotiate", channel_bindings=bindings)
        connection.pending = context
    try:
        out = context.step(token)
    except spnego.exceptions.BadBindingsError:
        connection.pending = None
        refusals.add("channel_binding")
        return False, None
    except Exception as exc:  # pyspnego raises more than its own errors on a token gssapi refused
        connection.pending = None
        # MIT's acceptor answers a refused ticket with a KRB-ERROR token, which Windows sends back in the 401 so
        # that the client can tell why (clock skew, ...); python-gssapi keeps it on the context's deferred error.
        refused = _deferred_error(context)
        refusals.add(_refusal_reason(refused if refused is not None else exc))
        return False, getattr(refused, "token", None)
    if not context.complete:
        return False, out
    connection.pending = None
    mechanism = context.negotiated_protocol
    if mechanism not in allowed:
        refusals.add(f"mechanism_{mechanism}")
        return False, None
    if policy.extended_protection and connection.tls_binding is not None and mechanism == "kerberos":
        # MIT's acceptor takes a ticket without bindings when it has some itself; Extended Protection does not.
        flags = getattr(getattr(getattr(context, "_context", None), "_context", None), "actual_flags", 0)
        if not int(flags) & GSS_C_CHANNEL_BOUND_FLAG:
            refusals.add("channel_binding")
            return False, None
    connection.session = Session(str(context.client_principal or ""), mechanism, context)
    return True, out


def _deferred_error(context: Any) -> Any:
    """The GSSError python-gssapi deferred on the chosen mechanism's context, if it got that far."""
    try:
        return getattr(getattr(context._context, "_context", None), "_last_err", None)
    except Exception:  # no mechanism chosen yet
        return None


def policy_binding(policy: AuthPolicy, connection: Connection) -> bytes:
    if policy.binding_certificate is not None:
        return tls_server_end_point(policy.binding_certificate)
    assert connection.tls_binding is not None
    return connection.tls_binding


def _refusal_reason(exc: BaseException) -> str:
    if getattr(exc, "min_code", 0) == KRB5KRB_AP_ERR_SKEW:
        return "clock_skew"
    if getattr(exc, "maj_code", 0) == GSS_S_BAD_BINDINGS:
        return "channel_binding"
    chain: list[str] = []
    error: BaseException | None = exc
    while error is not None and len(chain) < 5:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    text = " ".join(chain).lower()
    for needle, reason in (
        # python-gssapi hands back MIT's KRB-ERROR token instead of raising; pyspnego then finds no context.
        ("has not yet been started", "kerberos_error"),
        ("clock skew", "clock_skew"),
        ("bindings", "channel_binding"),
        ("channel binding", "channel_binding"),
        ("integrity", "bad_token"),
        ("keytab", "no_key"),
        ("credential", "bad_credential"),
    ):
        if needle in text:
            return reason
    return "refused"


# --- message encryption (MS-WSMV 2.2.9.1) --------------------------------------------------------------------


class EncryptionError(ValueError):
    """A body that claims to be encrypted but cannot be read."""


def unwrap(context: Any, body: bytes, content_type: str) -> tuple[bytes, str]:
    """The SOAP message inside an encrypted body, and the protocol it named."""
    protocol = _parameter(content_type, "protocol")
    boundary = _parameter(content_type, "boundary")
    if protocol not in PROTOCOLS or not boundary:
        raise EncryptionError(f"unsupported encrypted content type {content_type!r}")
    # Exchange writes "-- Encrypted Boundary"; WinRM "--Encrypted Boundary".
    parts = [p for p in re.split(rb"--\s*" + re.escape(boundary.encode()) + rb"(?:--)?\r\n", body) if p]
    if len(parts) != 2:
        raise EncryptionError(f"{len(parts)} MIME parts, expected 2")
    header, payload = parts
    length = re.search(rb"OriginalContent:\s*type=[^;]+;charset=[^;]+;Length=(\d+)", header)
    if length is None:
        raise EncryptionError("no OriginalContent length")
    payload = payload.removeprefix(b"\tContent-Type: application/octet-stream\r\n")
    if len(payload) < 4:
        raise EncryptionError("no signature length")
    (signature_length,) = struct.unpack("<I", payload[:4])
    signature, sealed = payload[4 : 4 + signature_length], payload[4 + signature_length :]
    message = context.unwrap_winrm(signature, sealed)
    if len(message) != int(length.group(1)):
        raise EncryptionError(f"decrypted {len(message)} bytes, the header said {int(length.group(1))}")
    return bytes(message), protocol


def wrap(context: Any, protocol: str, message: bytes) -> tuple[str, bytes]:
    """An encrypted body for ``message`` and its Content-Type."""
    signature, sealed, padding = context.wrap_winrm(message)
    body = (
        f"--{_BOUNDARY}\r\n\tContent-Type: {protocol}\r\n"
        f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={len(message) + padding}\r\n"
        f"--{_BOUNDARY}\r\n\tContent-Type: application/octet-stream\r\n"
    ).encode()
    body += struct.pack("<I", len(signature)) + signature + sealed + f"--{_BOUNDARY}--\r\n".encode()
    return f'multipart/encrypted;protocol="{protocol}";boundary="{_BOUNDARY}"', body


def _parameter(content_type: str, name: str) -> str:
    match = re.search(name + r'="?([^";]+)"?', content_type)
    return match.group(1) if match else ""


def basic_user(header_value: str, users: dict[str, str]) -> str | None:
    """The user a Basic Authorization value names, if its password is right."""
    try:
        user, _, password = base64.b64decode(header_value).decode("utf-8").partition(":")
    except ValueError:
        return None
    return user if users.get(user.lower()) == password else None
