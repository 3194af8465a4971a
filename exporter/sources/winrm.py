"""A thin, synchronous PowerShell remoting client for one server (pypsrp), run from worker threads.

It owns one runspace pool per server, reused across refreshes and reopened after a failure; it sends one
cmdlet with parameters per pipeline (Exchange's restricted runspace accepts nothing else) and returns
each output object's CLIXML for the parsers; it maps failures to short reasons. The credential guard
keeps a refused password from being retried until it could lock the service account out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import requests
import requests.adapters
import requests.exceptions
import spnego
from pydantic import SecretStr
from pypsrp.exceptions import AuthenticationError, WinRMError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import Serializer
from pypsrp.wsman import NAMESPACES, WSMan

from exporter.config.remoting import Remoting, RemotingHost
from exporter.sources.credential_guard import CredentialGuard
from exporter.sources.deadline import DeadlineExceeded, with_deadline
from exporter.sources.pool import SourceError

log = logging.getLogger(__name__)
AuthMethod = Literal["kerberos", "negotiate", "ntlm", "credssp", "basic"]
# The authentication failure reasons every remoting collector reports (README: Authentication).
AUTHENTICATION_REASONS = (
    "authentication: auth_failed, credential_suspended, unknown_principal, spn_unknown, clock_skew, "
    "kdc_unreachable, ticket_refused, channel_binding_refused, encryption_refused (README: Authentication)"
)


class RemotingError(SourceError):
    """A server could not answer. ``reason`` is a short, bounded label value; the message is for people."""


class PipelineOverrun(RemotingError):
    """A pipeline ran past the limit (reason ``timeout``)."""


@dataclass(frozen=True)
class RemotingTarget:
    name: str  # the server's name: the metrics' label
    host: str  # its DNS name: its certificate and Kerberos SPN (HTTP/host) name this
    port: int
    scheme: Literal["http", "https"]
    path: str  # "PowerShell" on Exchange, "wsman" elsewhere
    configuration: str  # Microsoft.Exchange, Microsoft.PowerShell
    verify: bool
    ca_file: Path | None
    encryption: Literal["auto", "always", "never"]
    timeout: float
    address: str | None = None  # where to connect, when not where host resolves to
    spn: str = ""  # the service principal asked for: <service>/<host> unless configured

    @classmethod
    def of(
        cls,
        remoting: Remoting,
        entry: RemotingHost,
        port: int | None = None,
        path: str | None = None,
        configuration: str = "",
    ) -> RemotingTarget:
        """A server as the remoting settings reach it (``port``/``path``/``configuration``: another endpoint than
        the entry's)."""
        host = entry.host or entry.name
        return cls(
            name=entry.name.lower(),
            host=host,
            port=port or entry.port or remoting.default_port,
            scheme=remoting.scheme,
            path=remoting.path if path is None else path,
            configuration=configuration or remoting.configuration_name,
            verify=remoting.tls.verify,
            ca_file=remoting.tls.ca_file,
            encryption=remoting.encryption,
            timeout=remoting.timeout_seconds,
            address=entry.address,
            spn=entry.spn or f"{remoting.auth.service}/{host}",
        )


@dataclass(frozen=True)
class RemotingCredential:
    method: AuthMethod
    user: str | None
    password: SecretStr | None
    keytab: Path | None = None
    credential_cache: str | None = None

    @classmethod
    def of(cls, remoting: Remoting) -> RemotingCredential:
        auth = remoting.auth
        return cls(auth.method, auth.user, auth.password, auth.keytab_file, auth.credential_cache)

    def fingerprint(self) -> str:
        secret = self.password.get_secret_value() if self.password else ""
        source = f"{self.keytab or ''}|{self.credential_cache or ''}"
        return CredentialGuard.fingerprint("winrm", self.method, self.user or "", secret, source)

    def describe(self) -> str:
        """How the credential is named in messages: the method, the account and where its key comes from."""
        source = (
            f" from keytab {self.keytab.name}"
            if self.keytab
            else f" from cache {self.credential_cache.split(':', 1)[0]}"
            if self.credential_cache
            else ""
        )
        return f"{self.method} as {self.user or 'the cached principal'}{source}"

    def for_spnego(self) -> tuple[Any, str | None]:
        """The username and password pypsrp hands to pyspnego: a keytab or a cache as pyspnego's own credential."""
        password = self.password.get_secret_value() if self.password else None
        if self.method == "kerberos" and self.keytab is not None:
            return spnego.KerberosKeytab(keytab=f"FILE:{self.keytab}", principal=self.user), None
        if self.method == "kerberos" and self.credential_cache is not None:
            return spnego.KerberosCCache(ccache=self.credential_cache, principal=self.user), None
        return self.user, password


@dataclass(frozen=True)
class RawClixml:
    """One output object exactly as the server serialised it."""

    xml: str


class _RawOutputSerializer(Serializer):
    """Hands pipeline output over as CLIXML text instead of pypsrp's generic objects.

    pypsrp turns objects it has no class for into GenericComplexObject and keeps nested lists as raw XML
    strings, which loses Exchange's RequesterDetails lists; our CLIXML parser reads them whole. pypsrp
    deserialises pipeline output with a bare ``deserialize(text)`` call and everything else with a type.
    """

    def deserialize(self, element: Any, metadata: Any = None, clear: bool = True) -> Any:
        if metadata is None and clear and isinstance(element, str):
            return RawClixml(element)
        return super().deserialize(element, metadata, clear)


class _WSMan(WSMan):
    """pypsrp's WSMan, with two answers read for what they are.

    - HTTP 400 with no body to an encrypted message: the kept-alive connection was closed (http.sys closes one idle
      for 120 s, less than the default refresh intervals) and the message went on a new one, where the old
      connection's encryption context means nothing. pypsrp keeps that context, so every later message fails too:
      the context is set up again on a new connection and the message sent once more (WinRM could not read it, so
      it has not acted on it).
    - A SOAP fault with HTTP 200 (a middlebox rewriting the status; the lab's fault_in_200) is the fault it is:
      pypsrp reads one as an empty answer and asks again at once, for good while a runspace is being opened."""

    def invoke(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = super().invoke(*args, **kwargs)
        except WinRMTransportError as exc:
            transport = self.transport
            if exc.code != 400 or exc.response_text or not transport.wrap_required or transport.encryption is None:
                raise
            # Authenticated again on a connection of its own: the one that answered 400 has been through a
            # handshake whose last leg may never have reached the client.
            transport.encryption = None
            if transport.session is not None:
                transport.session.close()
            response = super().invoke(*args, **kwargs)
        if response.find("s:Body/s:Fault", namespaces=NAMESPACES) is not None:
            raise self._parse_wsman_fault(ET.tostring(response, encoding="unicode"))
        return response


# WinRM's default MaxShellsPerUser: with more left, the server refuses new shells anyway; the oldest are let go
# (WinRM times them out).
_UNDELETED_KEPT = 30
_OPERATION_TIMEOUT = 2150858793  # WS-Management's fault for "nothing to say within the operation timeout"
_EMPTY_ANSWER_PAUSE = 0.2  # seconds: the pause after a Receive answered at once with nothing


class _BoundedPool(RunspacePool):
    """pypsrp's RunspacePool, its Receives bounded. pypsrp sends them for as long as a pipeline runs (Get-Queue on
    a wedged transport service never ends) or a negotiation goes unanswered, which would hold the thread and the
    server's lock for good: past the operation's deadline the next Receive raises instead. And a Receive answered
    at once with nothing is paced, so that a broken server or middlebox is not asked in a hot loop (WinRM holds a
    Receive until it has something to say or its operation timeout passes)."""

    _deadline: tuple[float, str] | None = None

    @contextlib.contextmanager
    def bounded(self, limit: float, what: str) -> Iterator[None]:
        self._deadline = (time.monotonic() + limit, what)
        try:
            yield
        finally:
            self._deadline = None

    def _receive(self, id: str | None = None, timeout: int | None = None) -> list[tuple[int, Any]]:
        if self._deadline is not None and time.monotonic() > self._deadline[0]:
            raise PipelineOverrun("timeout", self._deadline[1])
        started, nothing = time.monotonic(), True
        try:
            responses = super()._receive(id, timeout)
            nothing = not responses
            return responses
        except WSManFaultError as exc:
            nothing = exc.code == _OPERATION_TIMEOUT
            raise
        finally:
            if nothing and time.monotonic() - started < _EMPTY_ANSWER_PAUSE:
                time.sleep(_EMPTY_ANSWER_PAUSE)


def _raw_output_pool(connection: WSMan, configuration: str) -> _BoundedPool:
    pool = _BoundedPool(connection, configuration_name=configuration)
    serializer = _RawOutputSerializer()
    pool._serializer = serializer
    pool._fragmenter.serializer = serializer
    return pool


class PsrpClient:
    def __init__(
        self, target: RemotingTarget, credential: RemotingCredential, guard: CredentialGuard, retry_after: float
    ) -> None:
        self.target = target
        self.credential = credential
        self.guard = guard
        self.retry_after = retry_after
        self._pool: _BoundedPool | None = None
        # Runspaces whose shell could not be deleted (the path to the server failed with the runspace): deleted
        # over the next connection that works, since each counts against MaxShellsPerUser until WinRM's idle
        # timeout (two hours by default) and a flapping link would otherwise use the account's shells up.
        self._undeleted: collections.deque[RunspacePool] = collections.deque(maxlen=_UNDELETED_KEPT)
        # One pipeline at a time per server: a stuck server holds one thread, never more.
        self.lock = threading.Lock()

    def _connect(self) -> _BoundedPool:
        target, cred = self.target, self.credential
        cert_validation: bool | str = str(target.ca_file) if target.ca_file and target.verify else target.verify
        operation_timeout, read_timeout = _timeouts(target)
        service, _, spn_host = target.spn.partition("/")
        username, password = cred.for_spnego()
        connection = _WSMan(
            target.address or target.host,
            port=target.port,
            ssl=target.scheme == "https",
            path=target.path,
            auth=cred.method,
            encryption=target.encryption,
            username=username,
            password=password,
            # pypsrp passes this to requests' verify, which takes a CA bundle path as well as a bool.
            cert_validation=cert_validation,  # type: ignore[arg-type]
            connection_timeout=read_timeout,
            read_timeout=read_timeout,
            operation_timeout=operation_timeout,
            reconnection_retries=0,
            negotiate_service=service,
            negotiate_hostname_override=spn_host.split(":", 1)[0],
        )
        if target.address:
            connect_by_address(connection, target.host)
        limit = _give_up_after(target)
        with_deadline(_session(connection), limit)
        pool = _raw_output_pool(connection, target.configuration)
        try:
            with pool.bounded(limit, f"the runspace was not open after {limit:g}s"):
                pool.open()
        except BaseException:
            # Once Create is answered the shell exists on the server; left there, each failed open would count
            # against the account's MaxShellsPerUser until WinRM's idle timeout (two hours by default).
            self._close(pool)
            raise
        return pool

    def close(self) -> None:
        """Close the runspace once no pipeline is using it (or after the timeout one could take): a worker thread
        may still be in a refresh that was cancelled, and two threads on one session would open a second
        connection, which message encryption cannot use."""
        acquired = self.lock.acquire(timeout=self.target.timeout)
        try:
            if acquired and self._pool is not None:
                self._delete_undeleted(self._pool.connection)
            self._drop()
        finally:
            if acquired:
                self.lock.release()

    def _drop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            self._close(pool)

    def _close(self, pool: RunspacePool) -> None:
        """Delete the shell, best effort: the server or the path to it may be what failed. If it could not be
        deleted, it is tried again over the next connection that works."""
        try:
            pool.close()
        except Exception as exc:
            self._undeleted.append(pool)
            log.warning(
                "remoting to %s: the shell could not be deleted (tried again once the server answers): %s",
                self.target.name,
                _classify(exc, self.target),
            )

    def _delete_undeleted(self, connection: WSMan) -> None:
        """Delete the shells left over ``connection``, a working one: a shell belongs to the account, not to the
        connection it was made on. One the server no longer knows (it restarted, or timed the shell out) is let go."""
        while self._undeleted:
            pool = self._undeleted.popleft()
            pool.shell.wsman = connection  # its own connection, and that connection's encryption context, are gone
            try:
                pool.close()
            except WSManFaultError as exc:
                log.info("remoting to %s: a shell left earlier: %s", self.target.name, _classify(exc, self.target))
            except Exception:
                self._undeleted.appendleft(pool)  # the server is failing again: not one more wait for each shell
                return

    def run(self, cmdlet: str, parameters: Mapping[str, Any] | None = None) -> list[str]:
        """Run one cmdlet with parameters; return each output object's CLIXML. Hold ``lock`` around this."""
        return self.run_pipeline([(cmdlet, parameters or {})])

    def run_pipeline(
        self, commands: Sequence[tuple[str, Mapping[str, Any]]], tolerate: Sequence[str] = ()
    ) -> list[str]:
        """Run cmdlets piped into each other (no script); error records whose FullyQualifiedErrorId starts
        with one of ``tolerate`` are not failures (Get-WinEvent reports "no events" as an error)."""
        cmdlet = commands[0][0]
        fingerprint = self.credential.fingerprint()
        # A refusal by one server of a credential that others accept is that server's problem (an SPN, an
        # authentication setting) and holds back only this server; a credential no server has accepted
        # is held back everywhere, since each refusal counts towards the account's lockout.
        on_this_server = CredentialGuard.fingerprint(fingerprint, self.target.name)
        self._check_not_suspended(fingerprint, on_this_server)
        try:
            if self._pool is None:
                with self.guard.attempt(fingerprint):
                    # Checked again: another server may have refused it while we waited for the trial lock.
                    self._check_not_suspended(fingerprint, on_this_server)
                    self._pool = self._connect()
                self.guard.succeeded(fingerprint)
                self._delete_undeleted(self._pool.connection)
            ps = PowerShell(self._pool)
            for name, parameters in commands:
                ps.add_cmdlet(name)
                for key, value in parameters.items():
                    ps.add_parameter(key, value)
            limit = _give_up_after(self.target)
            with self._pool.bounded(limit, f"{cmdlet} still running after {limit:g}s; its runspace is closed"):
                output = ps.invoke()
            # Terminates the command on the server and drops it from pypsrp's registry, which otherwise keeps
            # every pipeline and its output for the runspace's lifetime (months, here).
            ps.close()
        except Exception as exc:
            self._drop()  # the caller holds the lock
            failure = self._failure(exc, fingerprint, on_this_server)
            if isinstance(exc, (DeadlineExceeded, PipelineOverrun)):  # said here: the refresh has given up by now
                log.warning("remoting to %s: %s: %s", self.target.name, failure.reason, failure)
            raise failure from None
        errors = [
            _error_text(e)
            for e in ps.streams.error
            if not (tolerate and str(getattr(e, "fq_error", "") or "").startswith(tuple(tolerate)))
        ]
        if ps.had_errors or errors:
            raise RemotingError("cmdlet_error", f"{cmdlet}: {'; '.join(errors) or 'the pipeline failed'}")
        return [o.xml if isinstance(o, RawClixml) else str(o) for o in output]

    def _check_not_suspended(self, *keys: str) -> None:
        for key in keys:
            refusal = self.guard.refusal(key)
            if refusal is not None:
                raise RemotingError(
                    "credential_suspended",
                    f"credential held back after: {refusal.reason}; not retried for "
                    f"{max(0.0, refusal.retry_at - refusal.at):.0f}s",
                )

    def _failure(self, exc: Exception, fingerprint: str, on_this_server: str) -> RemotingError:
        """The reason for a failed connection or pipeline; a refused credential is held back so that it cannot lock
        the account out (once everywhere if no server has accepted it, else on this server only)."""
        cred = self.credential
        kerberos = kerberos_failure(exc)
        if kerberos is not None:
            reason, message, of_account = kerberos
            if reason == "integrity":
                reason, message = (
                    ("channel_binding_refused", _CHANNEL_BINDING)
                    if self.target.scheme == "https"
                    else ("ticket_refused", "the server found the authenticator's checksum wrong")
                )
            if of_account:  # the KDC refused the account itself: every further try is one more bad password
                self.guard.refused(fingerprint, message, self.retry_after)
                message += "; held back so as not to lock the account out"
            return RemotingError(reason, f"{message} ({cred.describe()}, {self.target.spn})")
        if not isinstance(exc, AuthenticationError):
            return _classify(exc, self.target)
        if cred.method == "kerberos":
            # The KDC gave a ticket, so the account and its password are good: the server refused the ticket.
            if self.target.scheme == "https":
                return RemotingError(
                    "channel_binding_refused",
                    f"the server refused a valid Kerberos ticket for {self.target.spn} over HTTPS: {_CHANNEL_BINDING}",
                )
            return RemotingError(
                "ticket_refused",
                f"the server refused a valid Kerberos ticket for {self.target.spn}: its keys are not the ones the "
                "KDC has for that SPN (the SPN on another account, a stale keytab), or it takes no Kerberos here",
            )
        if self.guard.proven(fingerprint):
            self.guard.refused(on_this_server, "authentication refused by this server", self.retry_after)
            binding = " (over HTTPS: Extended Protection's channel binding?)" if self.target.scheme == "https" else ""
            return RemotingError(
                "auth_failed", f"this server refused a credential other servers accept ({cred.describe()}){binding}"
            )
        self.guard.refused(fingerprint, "authentication refused", self.retry_after)
        return RemotingError(
            "auth_failed",
            f"authentication refused ({cred.describe()}); held back so as not to lock the account out",
        )


def connect_by_address(connection: WSMan, tls_name: str) -> None:
    """Connect to the configured address while TLS sends and checks ``tls_name`` (the server's DNS name, which its
    certificate carries). pypsrp builds its requests session on first use; built here, its HTTPS pool is told."""
    adapter = _session(connection).get_adapter("https://")
    assert isinstance(adapter, requests.adapters.HTTPAdapter)
    adapter.poolmanager.connection_pool_kw.update(server_hostname=tls_name, assert_hostname=tls_name)


def _session(connection: WSMan) -> requests.Session:
    """The connection's requests session, built now if pypsrp has not yet (it does on first use)."""
    transport = connection.transport
    if transport.session is None:
        transport.session = transport._build_session()
    return transport.session


_CHANNEL_BINDING = (
    "Extended Protection found no matching channel binding (a TLS-terminating load balancer or proxy in between?), "
    "or its key is not the one the KDC has for that SPN"
)
# MIT krb5 error codes (krb5_err.et, RFC 4120 7.5.9): ERROR_TABLE_BASE_krb5 plus the protocol's error number.
_KRB5_BASE = -1765328384
_KERBEROS_REASONS = {
    6: ("unknown_principal", "the KDC does not know this account", True),
    7: ("spn_unknown", "no account has this service principal name (setspn -Q; an alias or load balancer?)", False),
    18: ("auth_failed", "the KDC refused the account: locked out or disabled", True),
    23: ("auth_failed", "the account's password has expired", True),
    24: ("auth_failed", "the KDC refused the password (pre-authentication failed)", True),
    37: ("clock_skew", "the clocks differ by more than the 5 minutes Kerberos allows (check NTP)", False),
    14: ("kerberos_error", "no encryption type in common with the KDC (msDS-SupportedEncryptionTypes)", False),
    # KRB_AP_ERR_BAD_INTEGRITY from the server: over HTTPS, the channel binding in the authenticator did not match.
    31: ("integrity", "the server found the authenticator's checksum wrong", False),
    # KRB_ERR_GENERIC: what MIT's acceptor answers a ticket whose channel bindings do not match its own.
    60: ("integrity", "the server refused the authenticator", False),
    41: ("ticket_refused", "the server could not decrypt the ticket: its key is not the KDC's for this SPN", False),
    156: ("kdc_unreachable", "no KDC of the realm answered (krb5.conf, DNS SRV records, port 88)", False),
    160: ("kdc_unreachable", "the realm's KDCs cannot be found (krb5.conf, DNS SRV records)", False),
}
_KERBEROS_TEXTS = (
    ("preauthentication failed", 24),
    ("not found in kerberos database", 6),
    ("clock skew too great", 37),
    ("cannot contact any kdc", 156),
    ("cannot find kdc", 160),
    ("revoked", 18),
    ("password has expired", 23),
)


def kerberos_failure(exc: BaseException) -> tuple[str, str, bool] | None:
    """(reason, message, refused the account itself) when a Kerberos step failed, from the krb5 error code that
    pyspnego, gssapi or krb5 carries (the exception, its base_error or its cause); None for other failures."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        # gssapi's GSSError has min_code, krb5's Krb5Error err_code.
        code = getattr(error, "min_code", None) or getattr(error, "err_code", None)
        if isinstance(code, int) and code:
            signed = code - (1 << 32) if code >= 1 << 31 else code
            found = _KERBEROS_REASONS.get(signed - _KRB5_BASE)
            if found is not None:
                if found[0] == "spn_unknown" and "client" in str(error).lower():
                    found = _KERBEROS_REASONS[6]
                return found
        text = str(error).lower()
        for needle, number in _KERBEROS_TEXTS:
            if needle in text:
                if number == 6 and "client" not in text:
                    number = 7
                return _KERBEROS_REASONS[number]
        pending += [getattr(error, "base_error", None), error.__cause__, error.__context__]
    return None


async def close_clients(clients: Iterable[PsrpClient]) -> None:
    """Close these clients together, each once its pipeline in flight has ended, off the event loop."""
    await asyncio.gather(*(asyncio.to_thread(client.close) for client in clients))


def _timeouts(target: RemotingTarget) -> tuple[int, int]:
    """(operation timeout, read timeout): WinRM holds a Receive up to the operation timeout; the read timeout must
    outlast it."""
    operation_timeout = max(1, math.floor(target.timeout) - 1)
    return operation_timeout, max(operation_timeout + 1, math.ceil(target.timeout))


def _give_up_after(target: RemotingTarget) -> float:
    """How long one HTTP exchange, or one pipeline, may take: a Receive is held up to the operation timeout, then
    its answer read, so twice the read timeout is far past any answer that is coming. It frees the thread from a
    server dripping its answer, or from a cmdlet that never ends."""
    return 2.0 * _timeouts(target)[1]


def _error_text(record: Any) -> str:
    """The exception message of an ErrorRecord (pypsrp keeps the category text in ``message``)."""
    exception = getattr(record, "exception", None)
    props = getattr(exception, "adapted_properties", None) or getattr(exception, "extended_properties", None) or {}
    message = getattr(record, "details_message", None) or props.get("Message") or getattr(record, "message", "")
    error_id = getattr(record, "fq_error", None)
    return f"{message} [{error_id}]" if error_id else str(message)


def _classify(exc: Exception, target: RemotingTarget | None = None) -> RemotingError:
    if isinstance(exc, RemotingError):
        return exc
    if isinstance(exc, DeadlineExceeded):
        return RemotingError("timeout", f"{exc} (a server or middlebox sending it a few bytes at a time?)")
    plain = target is not None and target.scheme == "http" and target.encryption == "never"
    if isinstance(exc, WinRMTransportError) and exc.code == 500 and plain and not exc.response_text:
        # WinRM answers an unencrypted message with an empty 500 when its AllowUnencrypted is false.
        return RemotingError(
            "encryption_refused",
            "the server refuses unencrypted messages (AllowUnencrypted=false): use encryption auto with "
            "kerberos/negotiate/ntlm, or https",
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return RemotingError("tls_error", f"TLS failed: {_short(exc)}")
    if isinstance(exc, requests.exceptions.Timeout):
        return RemotingError("timeout", "no answer before the timeout")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return RemotingError("unreachable", f"cannot connect: {_short(exc)}")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        # The connection went away in the middle of an answer (found with the lab's fault proxy): not a protocol
        # problem of the server's, the host or the path to it is failing.
        return RemotingError("unreachable", f"connection lost in the middle of an answer: {_short(exc)}")
    if isinstance(exc, WinRMTransportError):
        return RemotingError("server_error", f"HTTP {exc.code} from the WinRM endpoint")
    if isinstance(exc, WSManFaultError):
        if exc.code == 5:
            return RemotingError("access_denied", f"access denied: {exc.reason}")
        if exc.code == _OPERATION_TIMEOUT:  # only a pipeline's Receive is asked again after one; an open gives up
            return RemotingError("timeout", "no answer within the WS-Management operation timeout (fault 2150858793)")
        return RemotingError("wsman_fault", f"WS-Management fault {exc.code}: {exc.reason}")
    if isinstance(exc, WinRMError):
        return RemotingError("protocol_error", f"WinRM error: {exc}")
    return RemotingError("protocol_error", f"{type(exc).__name__}: {exc}")


def _short(exc: Exception) -> str:
    """requests wraps the cause several times; the innermost text says what happened."""
    text = str(exc)
    for marker in ("Caused by ", "Failed to establish a new connection: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip("()'\" ")[:200]
