"""A WS-Management / PowerShell remoting endpoint for the lab and the tests.

It speaks real WSMan SOAP (Create, Command, Send, Receive, Signal, Delete) over HTTP or HTTPS, authenticating
as hardened Windows servers do (lab.winrm_auth: Kerberos and NTLM with message encryption, Extended
Protection; Basic where a lab turns it on), and real PSRP fragments through psrpcore's server-side runspace
pool, so the unmodified pypsrp client talks to it as to a Windows host. What a command returns is up to a
:class:`CommandHandler` (lab.exchange answers Exchange cmdlets with CLIXML objects). It can be told to
misbehave: answer 401 or 500, stall, answer slowly.

This is test infrastructure: it trusts its one client and keeps everything in memory.
"""

from __future__ import annotations

import base64
import contextlib
import re
import ssl
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, Self
from xml.sax.saxutils import escape

import spnego
import spnego.exceptions
from defusedxml import ElementTree as SafeET
from psrpcore import (
    CreatePipelineEvent,
    PSRPPayload,
    ServerPipeline,
    ServerRunspacePool,
    StreamType,
)
from psrpcore._payload import PSRPMessage, create_message  # raw CLIXML output keeps objects as Windows sends them
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PSInvocationState,
    PSRPMessageType,
)

from lab import winrm_auth
from lab.winrm_auth import AuthPolicy, Connection, Refusals

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
_ACTION_PREFIXES = (
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/",
)
OPERATION_TIMEOUT_CODE = 2150858793
# Receive answers carry at most this much PSRP data (pypsrp's envelope is 512000 bytes, base64 grows 4/3).
_MAX_RECEIVE_BYTES = 300_000
_FRAGMENT = 32_768


@dataclass
class Invocation:
    """One pipeline as the client sent it."""

    configuration: str  # Microsoft.Exchange, Microsoft.PowerShell
    server: str
    commands: list[tuple[str, bool, list[tuple[str | None, Any]]]]  # (name or script, is_script, parameters)


@dataclass
class Output:
    """What a command produced: CLIXML documents (one ``<Obj>`` each), then an error or a failure."""

    objects: list[str] = field(default_factory=list)
    # A non-terminating error record written after the objects (the pipeline still completes).
    error: tuple[str, str, str] | None = None  # (message, fully qualified error id, category reason)
    # A terminating error: the pipeline ends Failed, as a Windows host fails a refused script.
    failure: tuple[str, str, str] | None = None
    # Delivered once this is set: a cmdlet that hangs (a wedged transport service's Get-Queue) until released.
    hold: threading.Event | None = None


_RECEIVE_ACTION = b"http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"
_RECEIVE_RESPONSE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse"


def unknown_command(name: str) -> Output:
    """How a Windows host refuses a command it does not have: the pipeline fails."""
    return Output(
        failure=(
            f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable program.",
            "CommandNotFoundException",
            "ObjectNotFound",
        )
    )


class CommandHandler(Protocol):
    def __call__(self, invocation: Invocation) -> Output: ...


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A client that goes away mid-request (the exporter stopping, a test ending) is not the endpoint's error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Pool(ServerRunspacePool):
    def queue_raw(self, clixml: str, pipeline_id: uuid.UUID) -> None:
        """Queue an output object as the exact CLIXML given (psrpcore would re-serialise it)."""
        data = create_message(
            False, PSRPMessageType.PipelineOutput, clixml.encode("utf-8"), self.runspace_pool_id, pipeline_id
        )
        self._send_buffer.append(
            PSRPMessage(
                PSRPMessageType.PipelineOutput,
                bytearray(data),
                self.runspace_pool_id,
                pipeline_id,
                self._fragment_counter,
                StreamType.default,
            )
        )


@dataclass
class _Shell:
    pool: _Pool
    configuration: str
    lock: threading.Condition = field(default_factory=threading.Condition)
    outbox: dict[uuid.UUID | None, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    pipelines: dict[uuid.UUID, ServerPipeline] = field(default_factory=dict)
    done: set[uuid.UUID] = field(default_factory=set)
    deleted: bool = False  # the client deleted it: what still runs in it is ended, as WinRM ends it

    def drain(self) -> None:
        """Move everything psrpcore has queued into per-target outboxes (call with the lock held)."""
        while (payload := self.pool.data_to_send(_FRAGMENT)) is not None:
            self.outbox[payload.pipeline_id].append(payload.data)
        self.lock.notify_all()


@dataclass
class Behaviour:
    """How the endpoint misbehaves; tests change it while it runs."""

    status: int | None = None  # answer every request with this HTTP status (401, 500)
    stall: bool = False  # hold every request until the behaviour changes or the server stops
    delay: float = 0.0  # answer every request this late
    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # requests seen, by action
    bytes_in: int = 0  # request bodies received
    bytes_out: int = 0  # response bodies sent
    encrypted_bodies: int = 0  # SOAP messages that arrived with message encryption
    plain_bodies: int = 0  # SOAP messages that arrived unencrypted on plain HTTP (refused unless allowed)
    authentications: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by mechanism
    refusals: Refusals = field(default_factory=Refusals)
    # How Receive answers go wrong: "malformed" (cut in half), "fault_in_200" (a WSMan fault with HTTP 200),
    # "empty" (answered at once with nothing, however long the pipeline or the negotiation has been waiting).
    # Connections reset mid-answer and slow drips are lab/faults.py's.
    receive_fault: str = ""
    # Close a kept-alive connection idle this long, as http.sys does (120 s by default): the client's next request
    # goes on a new connection, where the old one's message-encryption context means nothing.
    idle_timeout: float | None = None


class PsrpEndpoint:
    """One lab host's WinRM listener: ``/PowerShell`` (Microsoft.Exchange) and ``/wsman`` (Microsoft.PowerShell)."""

    def __init__(
        self,
        name: str,
        address: str,
        port: int,
        handler: CommandHandler,
        users: dict[str, str],
        tls: ssl.SSLContext | None = None,
        paths: dict[str, str] | None = None,
        receive_hold: float = 1.0,
        auth: AuthPolicy | None = None,
        certificate: bytes | None = None,
    ) -> None:
        """``users``: Basic's users and passwords; ``auth``: what it accepts (default: Basic, unencrypted, as a
        lab without a domain needs); ``certificate``: the DER of ``tls``'s certificate, for channel binding."""
        self.name = name
        self.address = address
        self.port = port
        self.handler = handler
        self.users = users
        self.paths = paths or {"/PowerShell": "Microsoft.Exchange", "/wsman": "Microsoft.PowerShell"}
        self.auth = auth or AuthPolicy({path: ("basic",) for path in self.paths}, allow_unencrypted=True)
        self._binding = winrm_auth.tls_server_end_point(certificate) if certificate and tls else None
        self.behaviour = Behaviour()
        self.receive_hold = receive_hold
        self.invocations: list[Invocation] = []
        self._shells: dict[str, _Shell] = {}
        self._shells_lock = threading.Lock()
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._server = _Server((address, port), self._handler_class())
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def scheme(self) -> str:
        return "https" if isinstance(self._server.socket, ssl.SSLSocket) else "http"

    @property
    def open_shells(self) -> int:
        """Shells created and not yet deleted: what WinRM counts against MaxShellsPerUser."""
        with self._shells_lock:
            return len(self._shells)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"psrp-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.misbehave()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def misbehave(self, status: int | None = None, stall: bool = False, delay: float = 0.0) -> None:
        """Set how every following request is answered; no arguments restores normal service."""
        with self._changed:
            self.behaviour.status, self.behaviour.stall, self.behaviour.delay = status, stall, delay
            self._changed.notify_all()

    # --- HTTP ------------------------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            state: Connection

            def setup(self) -> None:
                super().setup()
                self.state = Connection(tls_binding=endpoint._binding)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle_one_request(self) -> None:
                self.connection.settimeout(endpoint.behaviour.idle_timeout)  # a timeout closes the connection
                super().handle_one_request()

            def do_POST(self) -> None:
                if endpoint._stopping.is_set():
                    # A stopped host answers nothing, on a kept-alive connection too: the client sees it go away.
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status, headers, payload = endpoint._respond(
                    self.state,
                    self.path,
                    self.headers.get("Authorization", ""),
                    self.headers.get("Content-Type", ""),
                    body,
                )
                endpoint.behaviour.bytes_in += len(body)
                endpoint.behaviour.bytes_out += len(payload)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                    self.wfile.write(payload)

        return Handler

    def _challenge(self, path: str, token: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        offered = self.auth.mechanisms.get(path.rstrip("/") or "/", ())
        if token is not None:
            return 401, {"WWW-Authenticate": f"Negotiate {base64.b64encode(token).decode()}"}, b""
        schemes = [
            s
            for m, s in (("kerberos", "Negotiate"), ("ntlm", "Negotiate"), ("basic", 'Basic realm="WSMAN"'))
            if m in offered
        ]
        if "kerberos" in offered:
            schemes.append("Kerberos")
        return 401, {"WWW-Authenticate": ", ".join(dict.fromkeys(schemes)) or "Negotiate"}, b""

    def _respond(
        self, connection: Connection, path: str, authorization: str, content_type: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self._changed:
            behaviour = self.behaviour
            while behaviour.stall and not self._stopping.is_set():
                self._changed.wait(0.5)
            delay, status = behaviour.delay, behaviour.status
        if delay:
            time.sleep(delay)
        route = path.rstrip("/") or "/"
        if status == 401:
            connection.session = None
            return self._challenge(route)
        scheme, _, credentials = authorization.partition(" ")
        reply_token: bytes | None = None
        if scheme.lower() in ("negotiate", "kerberos"):
            try:
                token = base64.b64decode(credentials)
            except ValueError:
                return self._challenge(route)
            done, reply_token = winrm_auth.accept(connection, self.auth, route, token, behaviour.refusals)
            if not done:
                return self._challenge(route, reply_token) if reply_token else self._challenge(route)
            assert connection.session is not None
            behaviour.authentications[connection.session.mechanism] += 1
        elif scheme.lower() == "basic":
            user = winrm_auth.basic_user(credentials, self.users)
            if "basic" not in self.auth.mechanisms.get(route, ()) or user is None:
                behaviour.refusals.add("basic")
                return self._challenge(route)
            connection.session = winrm_auth.Session(user, "basic")
            behaviour.authentications["basic"] += 1
        elif connection.session is None:
            return self._challenge(route)
        session = connection.session
        assert session is not None
        mutual = {"WWW-Authenticate": f"Negotiate {base64.b64encode(reply_token).decode()}"} if reply_token else {}
        if not body:
            return 200, mutual, b""  # the empty request that sets up the context for message encryption
        protocol = ""
        if content_type.startswith(("multipart/encrypted", "multipart/x-multi-encrypted")):
            if session.context is None:
                return 400, {}, b""
            try:
                body, protocol = winrm_auth.unwrap(session.context, body, content_type)
            except (winrm_auth.EncryptionError, spnego.exceptions.SpnegoError):
                behaviour.refusals.add("undecryptable")
                return 400, {}, b""
            behaviour.encrypted_bodies += 1
        elif self.scheme == "http":
            behaviour.plain_bodies += 1
            if not self.auth.allow_unencrypted:
                # WinRM with AllowUnencrypted=false: HTTP 500 and an event "unencrypted message refused".
                behaviour.refusals.add("unencrypted")
                return 500, {}, b""
        status_code, headers, payload = self._respond_soap(path, body)
        fault = behaviour.receive_fault
        if fault and _RECEIVE_ACTION in body and (status_code == 200 or fault == "empty"):
            status_code, headers, payload = self._faulty_receive(fault, body, headers, payload)
        if protocol:
            content, payload = winrm_auth.wrap(session.context, protocol, payload)
            headers = {**headers, "Content-Type": content}
        return status_code, {**headers, **mutual}, payload

    def _faulty_receive(
        self, fault: str, request: bytes, headers: dict[str, str], payload: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if fault == "malformed":
            return 200, headers, payload[: len(payload) // 2]
        found = re.search(rb"<[^>]*MessageID>([^<]+)<", request)
        message_id = found.group(1).decode() if found else "uuid:00000000-0000-0000-0000-000000000000"
        if fault == "fault_in_200":
            _, fault_headers, body = self._fault(message_id, "w:InternalError", 2150858843, "The service is busy")
            return 200, fault_headers, body
        if fault == "empty":
            return self._ok(message_id, _RECEIVE_RESPONSE, "<rsp:ReceiveResponse/>")
        raise ValueError(f"unknown receive fault {fault!r}")

    def _respond_soap(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        behaviour = self.behaviour
        if behaviour.status is not None:
            return behaviour.status, {"Content-Type": "text/plain"}, b"lab endpoint told to fail"
        configuration = self.paths.get(path.rstrip("/") or "/")
        if configuration is None:
            return 404, {}, b""
        try:
            envelope = SafeET.fromstring(body)
        except ET.ParseError:
            return 400, {}, b""
        header = envelope.find("s:Header", NS)
        message_id = _text(header, "a:MessageID")
        action = _text(header, "a:Action")
        resource = _text(header, "w:ResourceURI")
        behaviour.count[action.rsplit("/", 1)[-1]] += 1
        if not resource.endswith("/" + configuration):
            return self._fault(
                message_id, "w:InvalidParameter", 2150858843, f"The resource URI {resource} is not served at {path}."
            )
        shell_id = ""
        selector = header.find("w:SelectorSet/w:Selector[@Name='ShellId']", NS) if header is not None else None
        if selector is not None:
            shell_id = (selector.text or "").upper()
        verb = action
        for prefix in _ACTION_PREFIXES:
            verb = verb.removeprefix(prefix)
        body_el = envelope.find("s:Body", NS)
        assert body_el is not None
        handlers: dict[str, Callable[[str, str, ET.Element, str], tuple[int, dict[str, str], bytes]]] = {
            "Create": self._create,
            "Command": self._command,
            "Send": self._send,
            "Receive": self._receive,
            "Signal": self._signal,
            "Delete": self._delete,
        }
        handler = handlers.get(verb)
        if handler is None:
            return self._fault(message_id, "a:ActionNotSupported", 2150858783, f"Action {action} is not supported.")
        if verb != "Create" and shell_id not in self._shells:
            return self._fault(message_id, "w:InvalidSelectors", 2150858843, f"Shell {shell_id} does not exist.")
        return handler(message_id, shell_id, body_el, configuration)

    # --- WSMan actions ---------------------------------------------------------------------------------------

    def _create(
        self, message_id: str, _: str, body: ET.Element, configuration: str
    ) -> tuple[int, dict[str, str], bytes]:
        shell_el = body.find("rsp:Shell", NS)
        creation = body.find(".//{http://schemas.microsoft.com/powershell}creationXml")
        if shell_el is None or creation is None:
            return self._fault(message_id, "w:InvalidParameter", 2150858843, "Create needs a Shell with creationXml.")
        shell_id = shell_el.get("ShellId", str(uuid.uuid4())).upper()
        shell = _Shell(_Pool(), configuration)  # the pool id arrives with the first fragment
        with shell.lock:
            self._feed(shell, base64.b64decode(creation.text or ""), None)
        with self._shells_lock:
            self._shells[shell_id] = shell
        uri = f"http://schemas.microsoft.com/powershell/{configuration}"
        return self._ok(
            message_id,
            "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
            f"<x:ResourceCreated><a:Address>{self.scheme}://{self.address}:{self.port}/wsman</a:Address>"
            f"<a:ReferenceParameters><w:ResourceURI>{uri}</w:ResourceURI><w:SelectorSet>"
            f'<w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet></a:ReferenceParameters>'
            f"</x:ResourceCreated><rsp:Shell><rsp:ShellId>{shell_id}</rsp:ShellId>"
            f"<rsp:ResourceUri>{uri}</rsp:ResourceUri><rsp:State>Connected</rsp:State></rsp:Shell>",
        )

    def _command(self, message_id: str, shell_id: str, body: ET.Element, _: str) -> tuple[int, dict[str, str], bytes]:
        shell = self._shells[shell_id]
        line = body.find("rsp:CommandLine", NS)
        if line is None:
            return self._fault(message_id, "w:InvalidParameter", 2150858843, "Command needs a CommandLine.")
        command_id = line.get("CommandId", str(uuid.uuid4())).upper()
        pipeline_id = uuid.UUID(command_id)
        with shell.lock:
            shell.pipelines[pipeline_id] = ServerPipeline(shell.pool, pipeline_id)
            self._feed(shell, base64.b64decode(_text(line, "rsp:Arguments")), pipeline_id)
        return self._ok(
            message_id,
            "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse",
            f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>",
        )

    def _send(self, message_id: str, shell_id: str, body: ET.Element, _: str) -> tuple[int, dict[str, str], bytes]:
        shell = self._shells[shell_id]
        with shell.lock:
            for stream in body.findall("rsp:Send/rsp:Stream", NS):
                command_id = stream.get("CommandId")
                self._feed(shell, base64.b64decode(stream.text or ""), uuid.UUID(command_id) if command_id else None)
        return self._ok(
            message_id, "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse", "<rsp:SendResponse/>"
        )

    def _receive(self, message_id: str, shell_id: str, body: ET.Element, _: str) -> tuple[int, dict[str, str], bytes]:
        shell = self._shells[shell_id]
        desired = body.find("rsp:Receive/rsp:DesiredStream", NS)
        command_id = desired.get("CommandId") if desired is not None else None
        target = uuid.UUID(command_id) if command_id else None
        deadline = time.monotonic() + self.receive_hold
        with shell.lock:
            # Hold the Receive until there is something to say, as WinRM does, so the client does not spin.
            while not shell.outbox[target] and target not in shell.done and time.monotonic() < deadline:
                shell.lock.wait(deadline - time.monotonic())
            chunks, size = [], 0
            outbox = shell.outbox[target]
            while outbox and size + len(outbox[0]) <= _MAX_RECEIVE_BYTES:
                chunk = outbox.pop(0)
                chunks.append(chunk)
                size += len(chunk)
            finished = target is not None and target in shell.done and not outbox
        if not chunks and not finished:
            return self._fault(
                message_id,
                "w:TimedOut",
                OPERATION_TIMEOUT_CODE,
                "The WS-Management service cannot complete the operation within the time specified "
                "in OperationTimeout.",
            )
        attr = f' CommandId="{command_id}"' if command_id else ""
        streams = "".join(
            f'<rsp:Stream Name="stdout"{attr}>{base64.b64encode(c).decode()}</rsp:Stream>' for c in chunks
        )
        state = ""
        if finished:
            state = (
                f'<rsp:CommandState{attr} State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/'
                'CommandState/Done"><rsp:ExitCode>0</rsp:ExitCode></rsp:CommandState>'
            )
        return self._ok(
            message_id,
            _RECEIVE_RESPONSE,
            f"<rsp:ReceiveResponse>{streams}{state}</rsp:ReceiveResponse>",
        )

    def _signal(self, message_id: str, shell_id: str, body: ET.Element, _: str) -> tuple[int, dict[str, str], bytes]:
        shell = self._shells[shell_id]
        signal = body.find("rsp:Signal", NS)
        command_id = signal.get("CommandId") if signal is not None else None
        if command_id:
            pipeline_id = uuid.UUID(command_id)
            with shell.lock:
                pipeline = shell.pipelines.get(pipeline_id)
                if pipeline is not None and pipeline.state == PSInvocationState.Running:
                    pipeline.stop()
                    shell.done.add(pipeline_id)
                    shell.drain()
        return self._ok(
            message_id,
            "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse",
            "<rsp:SignalResponse/>",
        )

    def _delete(self, message_id: str, shell_id: str, _: ET.Element, __: str) -> tuple[int, dict[str, str], bytes]:
        with self._shells_lock:
            shell = self._shells.pop(shell_id, None)
        if shell is not None:
            shell.deleted = True
        return self._ok(message_id, "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", "")

    # --- PSRP ---------------------------------------------------------------------------------------------

    def _feed(self, shell: _Shell, data: bytes, pipeline_id: uuid.UUID | None) -> None:
        shell.pool.receive_data(PSRPPayload(data, StreamType.default, pipeline_id))
        while (event := shell.pool.next_event()) is not None:
            if isinstance(event, CreatePipelineEvent):
                self._start(shell, event)
        shell.drain()

    def _start(self, shell: _Shell, event: CreatePipelineEvent) -> None:
        pipeline_id = event.pipeline_id
        pipeline = shell.pipelines[pipeline_id]
        commands = [(c.command_text, bool(c.is_script), list(c.parameters)) for c in event.pipeline.commands]
        invocation = Invocation(shell.configuration, self.name, commands)
        self.invocations.append(invocation)
        pipeline.start()
        threading.Thread(
            target=self._run, args=(shell, pipeline, invocation), daemon=True, name=f"pipeline-{pipeline_id}"
        ).start()

    def _run(self, shell: _Shell, pipeline: ServerPipeline, invocation: Invocation) -> None:
        if shell.configuration == "Microsoft.Exchange" and any(is_script for _, is_script, _ in invocation.commands):
            # Exchange's runspace is in no-language mode: a script fails the pipeline.
            output = Output(
                failure=(
                    "The syntax is not supported by this runspace. This can occur if the runspace "
                    "is in no-language mode.",
                    "ScriptsNotAllowed",
                    "ParseException",
                )
            )
        else:
            try:
                output = self.handler(invocation)
            except Exception as exc:  # the handler's bug becomes the client's error, as on a real host
                output = Output(failure=(f"{type(exc).__name__}: {exc}", "LabHandlerFailed", "InvalidOperation"))
        while output.hold is not None and not output.hold.wait(0.2):
            if pipeline.state != PSInvocationState.Running or self._stopping.is_set() or shell.deleted:
                return  # stopped by a Signal, its shell deleted, or the endpoint stopped while it hung
        with shell.lock:
            if pipeline.state != PSInvocationState.Running:
                return  # stopped by a Signal while we worked
            for clixml in output.objects:
                shell.pool.queue_raw(clixml, pipeline.pipeline_id)
            if output.error is not None:
                message, error_id, reason = output.error
                pipeline.write_error(
                    NETException(message),
                    ErrorCategoryInfo(Category=ErrorCategory.NotSpecified, Reason=reason),
                    fully_qualified_error_id=error_id,
                )
            if output.failure is not None:
                message, error_id, reason = output.failure
                record = ErrorRecord(
                    Exception=NETException(message),
                    CategoryInfo=ErrorCategoryInfo(Category=ErrorCategory.ParserError, Reason=reason),
                    FullyQualifiedErrorId=error_id,
                )
                # psrpcore has no public call to fail a pipeline; this is what complete() does with Failed.
                pipeline._change_state(PSInvocationState.Failed, error=record)
            else:
                pipeline.complete()
            shell.done.add(pipeline.pipeline_id)
            shell.drain()

    # --- SOAP -----------------------------------------------------------------------------------------------

    def _envelope(self, message_id: str, action: str, body: str) -> bytes:
        return (
            '<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
            'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
            'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
            'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
            'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell">'
            f"<s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
            "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
            f"<a:RelatesTo>{escape(message_id)}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
        ).encode()

    def _ok(self, message_id: str, action: str, body: str) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "application/soap+xml;charset=UTF-8"}, self._envelope(message_id, action, body)

    def _fault(self, message_id: str, subcode: str, code: int, message: str) -> tuple[int, dict[str, str], bytes]:
        body = (
            "<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode>"
            f"<s:Value>{subcode}</s:Value></s:Subcode></s:Code>"
            f'<s:Reason><s:Text xml:lang="en-US">{escape(message)}</s:Text></s:Reason><s:Detail>'
            f'<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="{code}" '
            f'Machine="{escape(self.name)}"><f:Message>{escape(message)}</f:Message></f:WSManFault>'
            "</s:Detail></s:Fault>"
        )
        return (
            500,
            {"Content-Type": "application/soap+xml;charset=UTF-8"},
            self._envelope(message_id, "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", body),
        )


def _text(parent: ET.Element | None, path: str) -> str:
    if parent is None:
        return ""
    found = parent.find(path, NS)
    return (found.text or "").strip() if found is not None else ""


class EndpointGroup:
    """Lab hosts that each run an endpoint (Exchange servers, DCs): started, stopped, used with ``with``."""

    endpoints: dict[str, PsrpEndpoint]

    def start(self) -> Self:
        for endpoint in self.endpoints.values():
            endpoint.start()
        return self

    def stop(self) -> None:
        for endpoint in self.endpoints.values():
            endpoint.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
