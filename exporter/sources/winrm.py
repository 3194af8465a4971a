"""A thin, synchronous PowerShell remoting client for one server (pypsrp), run from worker threads.

It owns one runspace pool per server, reused across refreshes and reopened after a failure; it sends one
cmdlet with parameters per pipeline (Exchange's restricted runspace accepts nothing else) and returns
each output object's CLIXML for the parsers; it maps failures to short reasons. The credential guard
keeps a refused password from being retried until it could lock the service account out.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import requests.exceptions
from pydantic import SecretStr
from pypsrp.exceptions import AuthenticationError, WinRMError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import Serializer
from pypsrp.wsman import WSMan

from exporter.config.remoting import Remoting
from exporter.sources.credential_guard import CredentialGuard
from exporter.sources.pool import SourceError

AuthMethod = Literal["kerberos", "negotiate", "ntlm", "credssp", "basic"]


class RemotingError(SourceError):
    """A server could not answer. ``reason`` is a short, bounded label value; the message is for people."""


@dataclass(frozen=True)
class RemotingTarget:
    name: str  # the server's name: the metrics' label
    host: str  # where to connect: its certificate and Kerberos SPN (HTTP/host) name this
    port: int
    scheme: Literal["http", "https"]
    path: str  # "PowerShell" on Exchange, "wsman" elsewhere
    configuration: str  # Microsoft.Exchange, Microsoft.PowerShell
    verify: bool
    ca_file: Path | None
    encryption: Literal["auto", "always", "never"]
    timeout: float

    @classmethod
    def of(
        cls, remoting: Remoting, name: str, host: str, port: int, path: str | None = None, configuration: str = ""
    ) -> RemotingTarget:
        """A server as the remoting settings reach it (``path``/``configuration``: another endpoint than theirs)."""
        return cls(
            name=name,
            host=host,
            port=port,
            scheme=remoting.scheme,
            path=remoting.path if path is None else path,
            configuration=configuration or remoting.configuration_name,
            verify=remoting.tls.verify,
            ca_file=remoting.tls.ca_file,
            encryption=remoting.encryption,
            timeout=remoting.timeout_seconds,
        )


@dataclass(frozen=True)
class RemotingCredential:
    method: AuthMethod
    user: str | None
    password: SecretStr | None

    @classmethod
    def of(cls, remoting: Remoting) -> RemotingCredential:
        return cls(remoting.auth.method, remoting.auth.user, remoting.auth.password)

    def fingerprint(self) -> str:
        secret = self.password.get_secret_value() if self.password else ""
        return CredentialGuard.fingerprint("winrm", self.method, self.user or "", secret)


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


def _raw_output_pool(connection: WSMan, configuration: str) -> RunspacePool:
    pool = RunspacePool(connection, configuration_name=configuration)
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
        self._pool: RunspacePool | None = None
        # One pipeline at a time per server: a stuck server holds one thread, never more.
        self.lock = threading.Lock()

    def _connect(self) -> RunspacePool:
        target, cred = self.target, self.credential
        cert_validation: bool | str = str(target.ca_file) if target.ca_file and target.verify else target.verify
        # WinRM holds a Receive up to the operation timeout; the read timeout must outlast it.
        operation_timeout = max(1, math.floor(target.timeout) - 1)
        read_timeout = max(operation_timeout + 1, math.ceil(target.timeout))
        connection = WSMan(
            target.host,
            port=target.port,
            ssl=target.scheme == "https",
            path=target.path,
            auth=cred.method,
            encryption=target.encryption,
            username=cred.user,
            password=cred.password.get_secret_value() if cred.password else None,
            # pypsrp passes this to requests' verify, which takes a CA bundle path as well as a bool.
            cert_validation=cert_validation,  # type: ignore[arg-type]
            connection_timeout=read_timeout,
            read_timeout=read_timeout,
            operation_timeout=operation_timeout,
            reconnection_retries=0,
        )
        pool = _raw_output_pool(connection, target.configuration)
        pool.open()
        return pool

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):  # best effort: the server may be gone
                pool.close()

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
        for key in (fingerprint, on_this_server):
            refusal = self.guard.refusal(key)
            if refusal is not None:
                raise RemotingError(
                    "credential_suspended",
                    f"credential held back after {refusal.reason}; not retried for "
                    f"{max(0.0, refusal.retry_at - refusal.at):.0f}s",
                )
        try:
            if self._pool is None:
                with self.guard.attempt(fingerprint):
                    self._pool = self._connect()
                self.guard.succeeded(fingerprint)
            ps = PowerShell(self._pool)
            for name, parameters in commands:
                ps.add_cmdlet(name)
                for key, value in parameters.items():
                    ps.add_parameter(key, value)
            output = ps.invoke()
            # Terminates the command on the server and drops it from pypsrp's registry, which otherwise keeps
            # every pipeline and its output for the runspace's lifetime (months, here).
            ps.close()
        except AuthenticationError:
            self.close()
            if self.guard.proven(fingerprint):
                self.guard.refused(on_this_server, "authentication refused by this server", self.retry_after)
                raise RemotingError(
                    "auth_failed",
                    "this server refused a credential other servers accept "
                    f"({self.credential.method} as {self.credential.user})",
                ) from None
            self.guard.refused(fingerprint, "authentication refused", self.retry_after)
            raise RemotingError(
                "auth_failed",
                f"authentication refused ({self.credential.method} as "
                f"{self.credential.user}); held back so as not to lock the account out",
            ) from None
        except Exception as exc:
            self.close()
            raise _classify(exc) from None
        errors = [
            _error_text(e)
            for e in ps.streams.error
            if not (tolerate and str(getattr(e, "fq_error", "") or "").startswith(tuple(tolerate)))
        ]
        if ps.had_errors or errors:
            raise RemotingError("cmdlet_error", f"{cmdlet}: {'; '.join(errors) or 'the pipeline failed'}")
        return [o.xml if isinstance(o, RawClixml) else str(o) for o in output]


def _error_text(record: Any) -> str:
    """The exception message of an ErrorRecord (pypsrp keeps the category text in ``message``)."""
    exception = getattr(record, "exception", None)
    props = getattr(exception, "adapted_properties", None) or getattr(exception, "extended_properties", None) or {}
    message = getattr(record, "details_message", None) or props.get("Message") or getattr(record, "message", "")
    error_id = getattr(record, "fq_error", None)
    return f"{message} [{error_id}]" if error_id else str(message)


def _classify(exc: Exception) -> RemotingError:
    if isinstance(exc, RemotingError):
        return exc
    if isinstance(exc, requests.exceptions.SSLError):
        return RemotingError("tls_error", f"TLS failed: {_short(exc)}")
    if isinstance(exc, requests.exceptions.Timeout):
        return RemotingError("timeout", "no answer before the timeout")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return RemotingError("unreachable", f"cannot connect: {_short(exc)}")
    if isinstance(exc, WinRMTransportError):
        return RemotingError("server_error", f"HTTP {exc.code} from the WinRM endpoint")
    if isinstance(exc, WSManFaultError):
        if exc.code == 5:
            return RemotingError("access_denied", f"access denied: {exc.reason}")
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
