"""``ad-exchange-exporter investigate ACCOUNT [--url URL]``: the lockout investigator at a terminal.

Asks a running exporter's ``/api/v1/lockouts/{account}`` and prints the verdict, what is not known and each
DC's view. Exit status: 0 when the account was found, 1 when it is unknown (or not an account name), 2 when the
exporter cannot be reached or refuses to answer.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from exporter.investigate import KINDS, utc_time

DEFAULT_URL = "http://127.0.0.1:9733"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def report(body: dict[str, Any]) -> str:
    """The API's answer as text for a terminal: verdict first, then what is not known, then each DC's view."""
    lines: list[str] = []
    rows = [row for table in body.get("directory", []) for row in table["dcs"]]
    locked = [row["dc"] for row in rows if row.get("locked")]
    state = f"LOCKED on {', '.join(locked)}" if locked else ("not locked" if rows else "no DC asked")
    origin = body.get("origin_dcs") or []
    lines.append(f"{body['account']}: {state}" + (f" (origin DC {origin[0]})" if origin else ""))
    if body.get("password_last_set"):
        lines.append(f"Password last set {utc_time(body['password_last_set'])} UTC")
    sources = body.get("sources", [])
    lines.append("")
    if sources:
        top = sources[0]
        via = f" through {top['via']}" if top.get("via") else ""
        stale = ", stale credential" if top.get("stale_credential") else ""
        name = f"{KINDS.get(top['kind'], top['kind'])} {top['value']}{via}"
        lines.append(f"Most likely: {name} ({top['confidence']} confidence{stale})")
        lines += [f"  - {line}" for line in top.get("evidence", [])]
    else:
        lines.append("Most likely: no source found in the evidence kept")
    if len(sources) > 1:
        lines += ["", "Other sources:"]
        lines += [
            "  " + line
            for line in _table(
                [["source", "through", "failures", "last", "confidence"]]
                + [
                    [
                        f"{KINDS.get(s['kind'], s['kind'])} {s['value']}",
                        s.get("via") or "-",
                        str(s["failures"]),
                        utc_time(s.get("last")),
                        s["confidence"] + (", stale" if s.get("stale_credential") else ""),
                    ]
                    for s in sources[1:]
                ]
            )
        ]
    if body.get("missing"):
        lines += ["", "Not known:"] + [f"  - {line}" for line in body["missing"]]
    for table in body.get("directory", []):
        lines += ["", f"Each DC's view ({table['domain']}, times UTC):"]
        header = ["DC", "site", "state", "bad pwd", "last bad pwd", "pwd last set", "lockout time", "orig lock"]
        cells = [header]
        for row in table["dcs"]:
            name = row["dc"] + (" (PDC)" if row.get("pdc") else "")
            if not row.get("up"):
                cells.append([name, row.get("site", ""), f"down: {row.get('error', '')}", "", "", "", "", ""])
            elif not row.get("found"):
                cells.append([name, row.get("site", ""), "no such account", "", "", "", "", ""])
            else:
                count = "?" if row.get("bad_pwd_count") is None else str(row["bad_pwd_count"])
                threshold = f"/{row['lockout_threshold']}" if row.get("lockout_threshold") else ""
                cells.append(
                    [
                        name,
                        row.get("site", ""),
                        "LOCKED" if row.get("locked") else "not locked",
                        count + threshold,
                        utc_time(row.get("last_bad_password")),
                        utc_time(row.get("pwd_last_set")),
                        utc_time(row.get("lockout_time")),
                        row.get("orig_lock") or "-",
                    ]
                )
        lines += ["  " + line for line in _table(cells)]
    return "\n".join(lines) + "\n"


def _context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    return context


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="ad-exchange-exporter investigate", description=__doc__)
    parser.add_argument("account", help="sAMAccountName or UPN")
    parser.add_argument("--url", default=os.environ.get("AD_EXCHANGE_EXPORTER_URL", DEFAULT_URL))
    parser.add_argument("--user", help="basic auth user of the exporter's web config")
    parser.add_argument("--password-file", type=Path, help="a file holding that user's password")
    parser.add_argument("--ca-file", type=Path, help="the CA that signed the exporter's certificate (https)")
    parser.add_argument("--json", action="store_true", help="print the API's answer as it is")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        print(f"{args.url}: the exporter's URL must be http:// or https://", file=err)
        return 2
    url = f"{args.url.rstrip('/')}/api/v1/lockouts/{quote(args.account, safe='')}"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - http(s) only
    if args.user:
        password = args.password_file.read_text().strip() if args.password_file else ""
        token = base64.b64encode(f"{args.user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        context = _context(args.ca_file) if url.startswith("https:") else None
        with urllib.request.urlopen(request, timeout=args.timeout, context=context) as response:  # noqa: S310 - as above
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        message = _error(exc)
        if exc.code in (400, 404):
            print(f"{args.account}: {message}", file=err)
            return 1
        print(f"{args.url}: {exc.code} {message}", file=err)
        return 2
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"{args.url}: cannot reach the exporter: {reason}", file=err)
        return 2
    out.write(json.dumps(body, indent=2, sort_keys=True) + "\n" if args.json else report(body))
    return 0


def _error(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("error", exc.reason))
    except (ValueError, AttributeError):
        return str(exc.reason)
