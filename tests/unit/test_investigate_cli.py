"""``ad-exchange-exporter investigate``: the API's answer as text, and its exit status when the exporter is away."""

from __future__ import annotations

import io

from exporter import cli
from exporter.investigate import investigate
from exporter.investigate_cli import main, report
from lab import free_port
from tests.unit.test_investigate import EXCHANGE, T0, dc_failure, iis, lockout


def test_the_report_reads_verdict_first_then_each_dc() -> None:
    verdict = investigate(
        "jdoe",
        [
            dc_failure(T0 + 1, "dc1.corp.example", ip="127.0.0.20"),
            iis(T0 + 1, "1326"),
            iis(T0 + 2, "1909"),
            lockout(T0 + 3),
        ],
        EXCHANGE,
    )
    dcs = [
        {"dc": "dc1.corp.example", "site": "HQ", "pdc": True, "up": True, "found": True, "locked": True,
         "bad_pwd_count": 3, "lockout_threshold": 3, "last_bad_password": T0 + 1, "pwd_last_set": T0 - 86400,
         "lockout_time": T0 + 3, "orig_lock": "dc1.corp.example"},
        {"dc": "dc2.corp.example", "site": "HQ", "pdc": False, "up": False, "error": "unreachable: timed out"},
    ]  # fmt: skip
    text = report({**verdict.as_dict(), "directory": [{"domain": "corp.example", "dcs": dcs}], "password_last_set": T0})
    lines = text.splitlines()
    assert lines[0] == "jdoe: LOCKED on dc1.corp.example (origin DC dc1.corp.example)"
    assert any(
        line.startswith("Most likely: device ApplF17XYZ through ex1.corp.example (high confidence") for line in lines
    )
    assert any("dc2.corp.example" in line and "down: unreachable" in line for line in lines)
    row = next(line for line in lines if line.strip().startswith("dc1.corp.example (PDC)"))
    assert "LOCKED" in row and "3/3" in row
    assert text.index("Most likely") < text.index("Not known") < text.index("Each DC's view")


def test_exit_status_when_the_exporter_cannot_be_asked() -> None:
    err = io.StringIO()
    assert main(["jdoe", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2"], io.StringIO(), err) == 2
    assert "cannot reach the exporter" in err.getvalue()
    assert main(["jdoe", "--url", "file:///etc/passwd"], io.StringIO(), io.StringIO()) == 2
    # The server's own command line hands "investigate" over.
    assert cli.main(["investigate", "jdoe", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2"]) == 2
