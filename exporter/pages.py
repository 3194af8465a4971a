"""The lockout pages: Jinja2 templates (autoescaped: every name and value from AD, events and logs is text) with
their stylesheet served from the package, no scripts, and a Content-Security-Policy that allows nothing else."""

from __future__ import annotations

from importlib import resources
from typing import Any

import jinja2

from exporter import __version__
from exporter import clock as domain_time
from exporter.investigate import KINDS, utc_time

# Nothing inline, nothing from elsewhere: the pages work without JavaScript and are not framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("exporter", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _ago(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    seconds = max(domain_time.now() - timestamp, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


_ENV.filters["when"] = utc_time
_ENV.filters["ago"] = _ago


def render(template: str, **context: Any) -> str:
    return _ENV.get_template(template).render(version=__version__, now=domain_time.now(), kinds=KINDS, **context)


def stylesheet() -> bytes:
    return resources.files("exporter").joinpath("templates/lockouts.css").read_bytes()
