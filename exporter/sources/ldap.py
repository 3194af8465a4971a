"""A thin, synchronous LDAP client for one domain controller (ldap3), run from worker threads.

It owns the connection to its DC (reused across refreshes), TLS with certificate verification, the
three bind methods, paged searches and the mapping of failures to short reasons. It returns raw
attribute bytes; decoding is the parsers' job.
"""

from __future__ import annotations

import contextlib
import math
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ldap3
from ldap3.core import exceptions as ldap_exc
from pydantic import SecretStr

from exporter.parsers.ad import parse_bind_error
from exporter.sources.credential_guard import CredentialGuard
from exporter.sources.pool import SourceError

RawEntry = tuple[str, dict[str, list[bytes]]]

_RESULT_INVALID_CREDENTIALS = 49


class LdapError(SourceError):
    """A DC could not answer. ``reason`` is a short, bounded label value; the message is for people."""


class BindRefused(LdapError):
    """The DC refused the exporter's credential (LDAP invalidCredentials)."""


class BindSuspended(LdapError):
    """The credential was refused earlier and is held back so as not to lock the account out."""


@dataclass(frozen=True)
class LdapEndpoint:
    host: str  # the DC's DNS name: checked against its certificate, used for the Kerberos SPN
    address: str  # where to connect
    port: int
    tls_mode: Literal["ldaps", "starttls", "none"]
    verify: bool
    ca_file: Path | None
    timeout: float

    @property
    def url(self) -> str:
        scheme = "ldaps" if self.tls_mode == "ldaps" else "ldap"
        return f"{scheme}://{self.address}:{self.port}"


@dataclass(frozen=True)
class LdapCredential:
    method: Literal["simple", "ntlm", "kerberos"]
    user: str | None
    password: SecretStr | None
    keytab: Path | None

    def fingerprint(self, domain: str) -> str:
        secret = self.password.get_secret_value() if self.password else ""
        keytab = ""
        if self.keytab is not None:
            try:
                keytab = f"{self.keytab}:{self.keytab.stat().st_mtime_ns}"
            except OSError:
                keytab = str(self.keytab)
        return CredentialGuard.fingerprint(domain.lower(), self.method, self.user or "", secret, keytab)


_SASL_BIND_IN_PROGRESS = 14
_RESULT_STRONGER_AUTH_REQUIRED = 8


def ntlm_spnego_bind(conn: ldap3.Connection, user: str, password: str, host: str) -> dict[str, Any]:
    """An NTLM bind as SASL GSS-SPNEGO, the mechanism both Windows AD and Samba offer, with pyspnego.

    ldap3's own NTLM bind uses the Sicily protocol, which Samba refuses, and asks hashlib for MD4, which
    OpenSSL 3 no longer has. pyspnego is given only the NT hash, so its Negotiate cannot fall back to a
    Kerberos attempt with the password. Over TLS the channel binding (tls-server-end-point) is sent, so DCs
    that enforce LDAP channel binding accept it.
    """
    import hashlib

    import spnego
    from ldap3.protocol.sasl.sasl import send_sasl_negotiation
    from spnego._ntlm_raw.crypto import ntowfv1  # pyspnego (a pypsrp dependency) has its own MD4
    from spnego._ntlm_raw.messages import NegotiateFlags
    from spnego.channel_bindings import GssChannelBindings

    bindings = None
    if isinstance(conn.socket, ssl.SSLSocket):
        certificate = conn.socket.getpeercert(binary_form=True)
        if certificate:
            # RFC 5929: the certificate's hash; SHA-256 for the SHA-1/SHA-256 signatures DCs use.
            bindings = GssChannelBindings(
                application_data=b"tls-server-end-point:" + hashlib.sha256(certificate).digest()
            )
    credential = spnego.NTLMHash(username=user, nt_hash=ntowfv1(password).hex())
    # TLS already protects the session: asking for NTLM signing or sealing on top is refused by the DC.
    context = spnego.client(
        credential,
        hostname=host,
        service="ldap",
        protocol="ntlm",
        channel_bindings=bindings,
        context_req=spnego.ContextReq.mutual_auth,
    )
    # Without signing or sealing pyspnego still offers KEY_EXCH and then sends a 1-byte placeholder key,
    # which Samba rejects ("KEY_EXCH session key was of invalid length"). Not offering KEY_EXCH is valid NTLM.
    context._context_req &= ~NegotiateFlags.key_exch
    conn.sasl_mechanism = "GSS-SPNEGO"
    token = context.step()
    while True:
        result: dict[str, Any] = send_sasl_negotiation(conn, None, token)
        if result.get("result") == 0:
            conn.bound = True
            return result
        if result.get("result") != _SASL_BIND_IN_PROGRESS:
            return result
        token = context.step(result.get("saslCreds"))


# RFC 4752 3.3: the security layers a SASL GSSAPI server offers and a client chooses.
_NO_LAYER, _INTEGRITY, _CONFIDENTIALITY = 1, 2, 4


def kerberos_sasl_bind(conn: ldap3.Connection, host: str, credentials: Any) -> dict[str, Any]:
    """A Kerberos bind as SASL GSSAPI (RFC 4752) that takes the security layer a hardened DC asks for.

    ldap3's own GSSAPI bind only takes "no security layer", which a DC requiring LDAP signing (Windows' default
    since Server 2025, Samba's ``ldap server require strong auth = yes``) refuses on port 389. Over TLS the
    session is already protected and no layer is chosen; on 389 every later message is sealed (encrypted and
    signed) with the Kerberos session key.
    """
    import gssapi
    from ldap3.protocol.sasl.sasl import send_sasl_negotiation

    plain = not isinstance(conn.socket, ssl.SSLSocket)
    flags = int(gssapi.RequirementFlag.mutual_authentication) | int(gssapi.RequirementFlag.out_of_sequence_detection)
    if plain:
        flags |= int(gssapi.RequirementFlag.integrity) | int(gssapi.RequirementFlag.confidentiality)
    name = gssapi.Name(f"ldap@{host}", gssapi.NameType.hostbased_service)
    context = gssapi.SecurityContext(name=name, creds=credentials, usage="initiate", flags=flags)
    conn.sasl_mechanism = "GSSAPI"
    conn.sasl_in_progress = True
    try:
        token: bytes = context.step() or b""
        while True:
            result: dict[str, Any] = send_sasl_negotiation(conn, None, token)
            if result.get("result") != _SASL_BIND_IN_PROGRESS:
                return result
            answer = result.get("saslCreds") or b""
            if not context.complete:
                token = context.step(answer) or b""
                continue
            offer = context.unwrap(answer).message
            offered, server_size = offer[0], int.from_bytes(offer[1:4], "big")
            if plain and offered & _CONFIDENTIALITY:
                layer = _CONFIDENTIALITY
            elif not plain and offered & _NO_LAYER:
                layer = _NO_LAYER
            else:
                raise LdapError(
                    "bind_failed",
                    f"{host} offers SASL security layers {offered:#x}, none usable here "
                    f"({'sealing on 389' if plain else 'none over TLS'})",
                )
            size = 0 if layer == _NO_LAYER else min(server_size or 0xFFFFFF, 0xFFFFFF)
            token = context.wrap(bytes([layer]) + size.to_bytes(3, "big"), False).message
            result = send_sasl_negotiation(conn, None, token)
            if result.get("result") == 0:
                conn.bound = True
                if layer != _NO_LAYER:
                    conn.socket = SaslSealedSocket(conn.socket, context)
            return result
    finally:
        conn.sasl_in_progress = False


class SaslSealedSocket:
    """The connection's socket once a SASL security layer is on: each LDAP message goes out as one sealed buffer
    (a 4-byte length, then the GSS-wrapped message) and what comes back is unsealed, buffer by buffer."""

    def __init__(self, sock: socket.socket, context: Any) -> None:
        self._socket = sock
        self._context = context
        self._plain = bytearray()

    def sendall(self, data: bytes) -> None:
        sealed = self._context.wrap(bytes(data), True).message
        self._socket.sendall(len(sealed).to_bytes(4, "big") + sealed)

    def recv(self, size: int) -> bytes:
        if not self._plain:
            header = self._read(4)
            if not header:
                return b""  # the DC closed the connection: ldap3 sees what a closed socket gives
            length = int.from_bytes(header, "big")
            if length > _MAX_SASL_BUFFER:
                raise OSError(f"a SASL buffer of {length} bytes is more than the {_MAX_SASL_BUFFER} allowed")
            self._plain += self._context.unwrap(self._read(length)).message
        out = bytes(self._plain[:size])
        del self._plain[:size]
        return out

    def _read(self, count: int) -> bytes:
        data = bytearray()
        while len(data) < count:
            chunk = self._socket.recv(count - len(data))
            if not chunk:
                if data:
                    raise OSError("the DC closed the connection inside a SASL buffer")
                return b""
            data += chunk
        return bytes(data)

    def __getattr__(self, name: str) -> Any:  # close, shutdown, settimeout, family, ...: the socket's own
        return getattr(self._socket, name)


_MAX_SASL_BUFFER = 16 * 1024 * 1024


class LdapClient:
    """One DC. Not thread-safe by itself: the lock serialises its callers."""

    def __init__(self, endpoint: LdapEndpoint, credential: LdapCredential, domain: str, guard: CredentialGuard) -> None:
        self.endpoint = endpoint
        self.credential = credential
        self.domain = domain
        self.guard = guard
        self.lock = threading.Lock()
        self._conn: ldap3.Connection | None = None
        self.last_bind_seconds: float | None = None
        # After a refusal the credential is held back this long; the collector raises it to cover the
        # domain's observation window once it has read the policy.
        self.retry_after = 1860.0

    # --- connection ------------------------------------------------------------------------------------

    def _server(self) -> ldap3.Server:
        ep = self.endpoint
        tls = ContextTls(ep.host, ep.ca_file, ep.verify) if ep.tls_mode != "none" else None
        return ldap3.Server(
            ep.address,
            port=ep.port,
            use_ssl=ep.tls_mode == "ldaps",
            tls=tls,
            get_info=ldap3.NONE,  # no schema download: we decode raw values ourselves
            connect_timeout=ep.timeout,
        )

    def _connection(self, server: ldap3.Server) -> ldap3.Connection:
        cred = self.credential
        common: dict[str, Any] = dict(
            auto_bind=ldap3.AUTO_BIND_NONE,
            receive_timeout=math.ceil(self.endpoint.timeout),  # ldap3 packs it into a C struct: int only
            read_only=True,
            auto_referrals=False,
            raise_exceptions=False,
            return_empty_attributes=False,
        )
        password = cred.password.get_secret_value() if cred.password else None
        if cred.method == "simple":
            return ldap3.Connection(server, user=cred.user, password=password, authentication=ldap3.SIMPLE, **common)
        if cred.method == "ntlm":
            return ldap3.Connection(server, authentication=ldap3.ANONYMOUS, **common)  # see ntlm_spnego_bind
        return ldap3.Connection(server, authentication=ldap3.ANONYMOUS, **common)  # see kerberos_sasl_bind

    def _kerberos_credentials(self) -> Any:
        cred = self.credential
        import gssapi
        import gssapi.raw
        from gssapi.raw.misc import GSSError

        if cred.keytab is not None:
            # A private in-memory cache, so the exporter never touches the host's ticket cache.
            store: dict[bytes | str, bytes | str] = {
                "client_keytab": str(cred.keytab),
                "ccache": f"MEMORY:ad-exchange-exporter-{id(self)}",
            }
            name = gssapi.Name(cred.user, gssapi.NameType.kerberos_principal) if cred.user else None
            return gssapi.Credentials(name=name, usage="initiate", store=store)
        if cred.password is None:
            return None  # the existing credential cache (KRB5CCNAME)

        name = gssapi.Name(cred.user, gssapi.NameType.kerberos_principal)
        try:
            acquired = gssapi.raw.acquire_cred_with_password(
                name, cred.password.get_secret_value().encode("utf-8"), usage="initiate"
            )
        except GSSError as exc:
            text = str(exc)
            if "Preauthentication failed" in text or "Password incorrect" in text:
                raise _Refused("wrong_password", "Kerberos pre-authentication failed (wrong password)") from None
            if "revoked" in text.lower() or "locked" in text.lower():
                raise _Refused("account_locked_out", "Kerberos: client's credentials have been revoked") from None
            raise LdapError("kerberos", f"Kerberos: {text}") from None
        return acquired.creds

    def _open(self) -> ldap3.Connection:
        ep = self.endpoint
        fingerprint = self.credential.fingerprint(self.domain)
        self._check_not_suspended(fingerprint)
        server = self._server()
        started = time.monotonic()
        with self.guard.attempt(fingerprint):
            # Checked again: another DC may have refused it while we waited for the trial lock.
            self._check_not_suspended(fingerprint)
            conn: ldap3.Connection | None = None
            try:
                # For Kerberos with a password this already asks the KDC: a logon attempt of its own.
                conn = self._connection(server)
                conn.open()
                if ep.tls_mode == "starttls" and not conn.start_tls():
                    raise LdapError("tls", f"StartTLS refused by {ep.url}: {conn.result.get('description')}")
                if self.credential.method == "ntlm":
                    secret = self.credential.password.get_secret_value() if self.credential.password else ""
                    result = ntlm_spnego_bind(conn, self.credential.user or "", secret, ep.host)
                    bound = result.get("result") == 0
                elif self.credential.method == "kerberos":
                    result = kerberos_sasl_bind(conn, ep.host, self._kerberos_credentials())
                    bound = result.get("result") == 0
                else:
                    bound = conn.bind()
                    result = conn.result or {}
            except _Refused as exc:
                bound, result = False, {"result": _RESULT_INVALID_CREDENTIALS, "reason": exc.reason}
            except ldap_exc.LDAPException as exc:
                _unbind_quietly(conn)
                raise _classify(exc, ep) from None
            except LdapError:
                _unbind_quietly(conn)
                raise
            except Exception as exc:
                _unbind_quietly(conn)
                if type(exc).__module__.startswith("gssapi"):
                    raise LdapError("kerberos", f"{ep.url}: Kerberos: {exc}") from None
                raise
            if not bound:
                _unbind_quietly(conn)
                if result.get("result") == _RESULT_INVALID_CREDENTIALS:
                    reason = result.get("reason") or parse_bind_error(str(result.get("message", "")))
                    self.guard.refused(fingerprint, reason, self.retry_after)
                    raise BindRefused(reason, f"{ep.url} refused the bind: {reason}")
                if result.get("result") == _RESULT_STRONGER_AUTH_REQUIRED:
                    advice = (
                        "over TLS it takes simple binds only (Samba's 'ldap server require strong auth = yes'; "
                        "allow_sasl_over_tls, or Windows, also takes SASL over TLS): bind method simple here, or "
                        "kerberos without TLS, which seals on 389"
                        if ep.tls_mode != "none"
                        else "use tls ldaps or starttls, or bind method kerberos, which seals on 389"
                    )
                    raise LdapError(
                        "strong_auth_required",
                        f"{ep.url} refused this bind for want of signing or TLS (Windows: 'Domain controller: LDAP "
                        f"server signing requirements'; Samba: 'ldap server require strong auth'); {advice}",
                    )
                raise LdapError(
                    "bind_failed",
                    f"{ep.url} bind failed: {result.get('description')} {result.get('message', '')}".strip(),
                )
            self.guard.succeeded(fingerprint)
        assert conn is not None
        self.last_bind_seconds = time.monotonic() - started
        return conn

    def _check_not_suspended(self, fingerprint: str) -> None:
        refusal = self.guard.refusal(fingerprint)
        if refusal is not None:
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(refusal.retry_at))
            raise BindSuspended(
                "bind_suspended",
                f"not binding: this credential was refused ({refusal.reason}); it is held back until {until} "
                "or a configuration change, so as not to lock out the service account",
            )

    def close(self) -> None:
        _unbind_quietly(self._conn)
        self._conn = None

    # --- searches ------------------------------------------------------------------------------------

    def search(
        self,
        base: str,
        ldap_filter: str,
        attributes: Sequence[str],
        *,
        scope: Literal["base", "subtree", "level"] = "subtree",
        page_size: int = 500,
    ) -> list[RawEntry]:
        """Run a (paged) search; reconnects once if a reused connection has gone stale."""
        reused = self._conn is not None
        try:
            return self._search(base, ldap_filter, attributes, scope, page_size)
        except LdapError as exc:
            if not reused or isinstance(exc, BindRefused | BindSuspended) or exc.reason == "search_failed":
                raise
            self.close()
            return self._search(base, ldap_filter, attributes, scope, page_size)

    def _search(
        self, base: str, ldap_filter: str, attributes: Sequence[str], scope: str, page_size: int
    ) -> list[RawEntry]:
        if self._conn is None:
            self._conn = self._open()
        conn = self._conn
        ldap_scope = {"base": ldap3.BASE, "subtree": ldap3.SUBTREE, "level": ldap3.LEVEL}[scope]
        entries: list[RawEntry] = []
        cookie: bytes | None = None
        try:
            while True:
                ok = conn.search(
                    base,
                    ldap_filter,
                    search_scope=ldap_scope,
                    attributes=list(attributes),
                    paged_size=page_size if scope != "base" else None,
                    paged_cookie=cookie,
                    time_limit=max(int(self.endpoint.timeout), 1),
                )
                result = conn.result or {}
                if not ok and result.get("result") not in (0, 32):  # 32: noSuchObject, an empty answer
                    if result.get("description") in ("socketClosed",) or conn.closed:
                        raise LdapError("unreachable", f"{self.endpoint.url}: connection lost")
                    raise LdapError(
                        "search_failed",
                        f"{self.endpoint.url}: search of {base} failed: "
                        f"{result.get('description')} {result.get('message', '')}",
                    )
                for item in conn.response or []:
                    if item.get("type") == "searchResEntry":
                        entries.append((item["dn"], dict(item.get("raw_attributes") or {})))
                controls = result.get("controls") or {}
                cookie = controls.get("1.2.840.113556.1.4.319", {}).get("value", {}).get("cookie")
                if not cookie:
                    return entries
        except ldap_exc.LDAPException as exc:
            self.close()
            raise _classify(exc, self.endpoint) from None


class ContextTls(ldap3.Tls):  # type: ignore[misc]
    """TLS whose certificate and host-name checks are done by the SSL context itself.

    We connect by address but verify the DC's DNS name (server_hostname), as any TLS client does.
    ldap3's own check calls ssl.match_hostname, deprecated since Python 3.7 and gone in 3.12.
    """

    def __init__(self, host: str, ca_file: Path | None, verify: bool) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE, version=ssl.PROTOCOL_TLS_CLIENT)
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._context = context
        self._host = host

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket, server_side=False, do_handshake_on_connect=do_handshake, server_hostname=self._host
        )


class _Refused(Exception):
    """A Kerberos pre-authentication refusal, raised from inside ldap3's bind."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def _unbind_quietly(conn: ldap3.Connection | None) -> None:
    if conn is None:
        return
    with contextlib.suppress(ldap_exc.LDAPException):
        conn.unbind()


_CONNECTION_LOST = ("reset by peer", "connection reset", "broken pipe", "eof occurred", "unexpected eof")


def _classify(exc: Exception, ep: LdapEndpoint) -> LdapError:
    text = str(exc)
    lowered = text.lower()
    # A DC that dies mid-answer surfaces through the TLS layer ("socket ssl wrapping error: ... reset by peer"):
    # that is a lost connection, not a TLS problem (found by the fault proxy's resets).
    if not isinstance(exc, ldap_exc.LDAPCertificateError) and any(m in lowered for m in _CONNECTION_LOST):
        return LdapError("unreachable", f"{ep.url}: connection lost: {text}")
    if isinstance(exc, ldap_exc.LDAPCertificateError) or "certificate" in lowered or "ssl" in lowered:
        return LdapError("tls", f"{ep.url}: TLS failure: {text}")
    if "timed out" in lowered or "timeout" in lowered:
        return LdapError("timeout", f"{ep.url}: no answer within {ep.timeout:g}s")
    if isinstance(
        exc,
        ldap_exc.LDAPSocketOpenError
        | ldap_exc.LDAPSocketReceiveError
        | ldap_exc.LDAPSocketSendError
        | ldap_exc.LDAPSessionTerminatedByServerError,
    ):
        return LdapError("unreachable", f"{ep.url}: {text}")
    if isinstance(exc, ldap_exc.LDAPPackageUnavailableError):
        return LdapError("kerberos", f"Kerberos bind needs the 'gssapi' package: {text}")
    return LdapError("ldap_error", f"{ep.url}: {type(exc).__name__}: {text}")
