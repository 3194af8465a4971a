"""TLS and basic auth for the web endpoint, configured like Prometheus' exporter-toolkit (``--web.config.file``).

The same file a Go exporter reads works here::

    tls_server_config:
      cert_file: /etc/ad-exchange-exporter/tls/tls.crt
      key_file: /etc/ad-exchange-exporter/tls/tls.key
      client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
      min_version: TLS12
    basic_auth_users:
      prometheus: $2b$12$...                        # bcrypt hashes only, never passwords
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}

Differences, each refused with an error that names the field rather than silently ignored:
``curve_preferences`` (Python's ssl module sets one curve, not a preference list) and the client auth types that
accept a client certificate without verifying it (OpenSSL through Python always verifies what it asks for).
Certificate and key files are read again when they change on disk, as exporter-toolkit does on each handshake,
so a certificate renewed in place (cert-manager, a Kubernetes Secret) is served without a restart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import Field, field_validator, model_validator

from exporter.config import ReadableFile, StrictModel, read_model, readable_file

# Go's crypto/tls names (which exporter-toolkit accepts) are the IANA names; OpenSSL knows the suites by code.
_IANA_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": 0x002F,
    "TLS_RSA_WITH_AES_256_CBC_SHA": 0x0035,
    "TLS_RSA_WITH_AES_128_GCM_SHA256": 0x009C,
    "TLS_RSA_WITH_AES_256_GCM_SHA384": 0x009D,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": 0xC009,
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": 0xC00A,
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": 0xC013,
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": 0xC014,
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": 0xC02B,
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": 0xC02F,
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": 0xC02C,
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": 0xC030,
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA8,
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA9,
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": 0xCCA8,
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": 0xCCA9,
}
_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# The headers exporter-toolkit lets a web config set.
_SETTABLE_HEADERS = {
    "Strict-Transport-Security",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
}
_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")
# Checked when a user name is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY_HASH = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=10))

TlsVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]


class TlsServerConfig(StrictModel):
    cert_file: ReadableFile
    key_file: ReadableFile
    client_auth_type: Literal[
        "NoClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
        "RequestClientCert",
        "RequireAnyClientCert",
    ] = "NoClientCert"
    client_ca_file: ReadableFile | None = None
    client_allowed_sans: list[str] = Field(default_factory=list)
    min_version: TlsVersion = "TLS12"
    max_version: TlsVersion = "TLS13"
    cipher_suites: list[str] = Field(default_factory=list)
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[str] = Field(default_factory=list)

    _files = field_validator("cert_file", "key_file", "client_ca_file")(readable_file)

    @field_validator("cipher_suites")
    @classmethod
    def _known_suites(cls, suites: list[str]) -> list[str]:
        unknown = [s for s in suites if s not in _IANA_SUITES]
        if unknown:
            raise ValueError(
                f"unknown TLS 1.2 cipher suite(s) {', '.join(unknown)}; known: {', '.join(sorted(_IANA_SUITES))}"
            )
        return suites

    @field_validator("curve_preferences")
    @classmethod
    def _no_curves(cls, curves: list[str]) -> list[str]:
        if curves:
            raise ValueError("not supported by this exporter (OpenSSL's curve preferences apply); remove it")
        return curves

    @model_validator(mode="after")
    def _consistent(self) -> TlsServerConfig:
        if self.client_auth_type in ("RequestClientCert", "RequireAnyClientCert"):
            raise ValueError(
                "client_auth_type: accepting client certificates without verifying them is not "
                "supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with "
                "client_ca_file"
            )
        if self.client_auth_type != "NoClientCert" and self.client_ca_file is None:
            raise ValueError(f"client_ca_file: required with client_auth_type {self.client_auth_type}")
        if self.client_allowed_sans and self.client_auth_type == "NoClientCert":
            raise ValueError("client_allowed_sans: needs a client_auth_type that verifies client certificates")
        if _VERSIONS[self.min_version] > _VERSIONS[self.max_version]:
            raise ValueError("min_version: is newer than max_version")
        return self


class HttpServerConfig(StrictModel):
    # aiohttp serves HTTP/1.1 only; the key is accepted so that a file written for a Go exporter still loads.
    http2: bool = True
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _settable(cls, headers: dict[str, str]) -> dict[str, str]:
        refused = [h for h in headers if h not in _SETTABLE_HEADERS]
        if refused:
            raise ValueError(
                f"header(s) {', '.join(refused)} cannot be set; allowed: {', '.join(sorted(_SETTABLE_HEADERS))}"
            )
        return headers


class WebSecurityConfig(StrictModel):
    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = Field(default_factory=HttpServerConfig)
    basic_auth_users: dict[str, str] = Field(default_factory=dict)

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_only(cls, users: dict[str, str]) -> dict[str, str]:
        for user, hashed in users.items():
            if not user or ":" in user:
                raise ValueError(f"user name {user!r} is empty or contains ':'")
            raw = hashed.encode()
            if not raw.startswith(_BCRYPT_PREFIXES) or len(raw) != 60:
                # Never echo the value: it may be a password pasted by mistake.
                raise ValueError(
                    f"{user}: not a bcrypt hash (expected $2a$/$2b$/$2y$, 60 characters); "
                    "generate one with: python -c 'import bcrypt,getpass; "
                    "print(bcrypt.hashpw(getpass.getpass().encode(), bcrypt.gensalt()).decode())'"
                )
        return users


def load_web_config(path: Path) -> WebSecurityConfig:
    return read_model(path, WebSecurityConfig)


class TlsContexts:
    """The server's SSL context, rebuilt when the certificate, key or client CA file changes on disk."""

    _CHECK_EVERY = 1.0  # seconds between stat() calls, so a busy endpoint does not stat per handshake

    def __init__(self, config: TlsServerConfig) -> None:
        self.config = config
        self._stamp = self._files_stamp()
        self._current = self._build()
        self._checked = time.monotonic()
        # The listening socket starts with the first context; for each handshake it picks the current one.
        self.listener = self._current
        self.listener.sni_callback = self._pick

    def update(self, config: TlsServerConfig) -> None:
        """A reloaded web config: its files are read at once (errors propagate, the old context stays)."""
        old = self.config
        self.config = config
        try:
            self._current = self._build()
        except (OSError, ssl.SSLError):
            self.config = old
            raise
        self._stamp = self._files_stamp()

    def _files_stamp(self) -> tuple[tuple[int, int], ...]:
        files = [self.config.cert_file, self.config.key_file, self.config.client_ca_file]
        stamps = []
        for f in files:
            if f is None:
                continue
            try:
                st = os.stat(f)
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((0, 0))
        return tuple(stamps)

    def _build(self) -> ssl.SSLContext:
        cfg = self.config
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _VERSIONS[cfg.min_version]
        ctx.maximum_version = _VERSIONS[cfg.max_version]
        if _VERSIONS[cfg.min_version] < ssl.TLSVersion.TLSv1_2:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL refuses TLS 1.0/1.1 at its default security level
        if cfg.cipher_suites:
            ctx.set_ciphers(":".join(_openssl_names(cfg.cipher_suites)))
        if cfg.prefer_server_cipher_suites:
            ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        if cfg.client_ca_file is not None:
            ctx.load_verify_locations(cafile=cfg.client_ca_file)
        ctx.verify_mode = {
            "NoClientCert": ssl.CERT_NONE,
            "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
            "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
        }[cfg.client_auth_type]
        return ctx

    def current(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked >= self._CHECK_EVERY:
            self._checked = now
            stamp = self._files_stamp()
            if stamp != self._stamp:
                try:
                    self._current = self._build()
                    self._stamp = stamp
                except (OSError, ssl.SSLError):
                    # A half-written renewal: keep serving the previous certificate and try again later.
                    pass
        return self._current

    def _pick(self, sslobj: ssl.SSLObject | ssl.SSLSocket, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = self.current()


def _openssl_names(suites: list[str]) -> list[str]:
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    probe.set_ciphers("ALL:@SECLEVEL=0")
    by_code = {c["id"] & 0xFFFF: c["name"] for c in probe.get_ciphers()}
    return [by_code[_IANA_SUITES[s]] for s in suites if _IANA_SUITES[s] in by_code]


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes.

    bcrypt is slow on purpose (tens of milliseconds), so checks run in a thread, at most two at a time (a password
    guesser must not starve the collectors of CPU next to a DC), and a pair that passed once is remembered by a
    digest so that a scrape every 15 s does not pay bcrypt every time.
    """

    _REMEMBER = 64

    def __init__(self, users: dict[str, str]) -> None:
        self.users = {u: h.encode() for u, h in users.items()}
        self._passed: dict[bytes, None] = {}
        self._slots = asyncio.Semaphore(2)

    @staticmethod
    def credentials(header: str) -> tuple[str, str] | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        return (user, password) if sep else None

    async def check(self, header: str) -> bool:
        creds = self.credentials(header)
        if creds is None:
            return False
        user, password = creds
        hashed = self.users.get(user)
        key = hashlib.sha256(b"\0".join([user.encode(), password.encode(), hashed or b""])).digest()
        if hashed is not None and key in self._passed:
            return True
        async with self._slots:
            ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed or _DUMMY_HASH)
        if ok and hashed is not None:
            if len(self._passed) >= self._REMEMBER:
                self._passed.pop(next(iter(self._passed)))
            self._passed[key] = None
            return True
        return False


class WebSecurity:
    """One loaded web config: its basic auth users, allowed client SANs and headers.

    ``open_paths`` (by default /-/healthy and /-/ready, which only ever say OK or not) stay reachable without
    credentials so that a kubelet or a load balancer can probe them.
    """

    def __init__(self, config: WebSecurityConfig, open_paths: frozenset[str] = frozenset()) -> None:
        self.config = config
        self.open_paths = open_paths
        self.auth = BasicAuth(config.basic_auth_users) if config.basic_auth_users else None
        tls = config.tls_server_config
        self.allowed_sans = frozenset(tls.client_allowed_sans) if tls else frozenset()
        self.headers = config.http_server_config.headers


def security_middleware(get_security: Callable[[], WebSecurity | None]) -> Middleware:
    """Fetches the web config per request, so that a reload (SIGHUP) changes users without a restart."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        security = get_security()
        if security is None:
            return await handler(request)
        headers = security.headers
        if security.allowed_sans and not _client_san_allowed(request, security.allowed_sans):
            return web.Response(status=403, text="Forbidden\n", headers=headers)
        if (
            security.auth is not None
            and request.path not in security.open_paths
            and not await security.auth.check(request.headers.get("Authorization", ""))
        ):
            return web.Response(status=401, text="Unauthorized\n", headers={**headers, "WWW-Authenticate": "Basic"})
        response = await handler(request)
        response.headers.update(headers)
        return response

    return middleware


def _client_san_allowed(request: web.Request, allowed: frozenset[str]) -> bool:
    transport = request.transport
    peercert = transport.get_extra_info("peercert") if transport else None
    if not peercert:
        return False
    return any(value in allowed for _kind, value in peercert.get("subjectAltName", ()))
