"""The SMTP probe against blackbox_exporter's TCP prober doing SMTP STARTTLS, on the same lab target.

    python -m bench smtp_probe [--rounds 200]

Both run as their own processes and are asked over HTTP, as Prometheus would, in turn; the latency is the
median of each one's /probe round trips. Then both answers are listed side by side.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

from lab import free_port, stop_process
from lab.exporter_config import write_config
from lab.smtp import SmtpLab

BLACKBOX_MODULE = textwrap.dedent("""
    modules:
      smtp_starttls:
        prober: tcp
        timeout: 5s
        tcp:
          query_response:
            - expect: "^220 "
            - send: "EHLO bench.lab.example\\r"
            - expect: "^250[- ]STARTTLS"
            - send: "STARTTLS\\r"
            - expect: "^220"
            - starttls: true
            - send: "EHLO bench.lab.example\\r"
            - expect: "^250 "
            - send: "QUIT\\r"
          tls_config:
            insecure_skip_verify: true
""")


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own http://127.0.0.1 URLs
        return str(response.read().decode())


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            fetch(url)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def timed(urls: list[str], rounds: int) -> list[tuple[float, str]]:
    """The median round trip of each URL, asked in turn round after round, so that the machine's noise and the
    lab server's state fall on all of them alike."""
    for url in urls:
        fetch(url)  # warm up: connections, imports
    times: list[list[float]] = [[] for _ in urls]
    texts = [""] * len(urls)
    for _ in range(rounds):
        for i, url in enumerate(urls):
            started = time.perf_counter()
            texts[i] = fetch(url)
            times[i].append(time.perf_counter() - started)
    return [(statistics.median(t), text) for t, text in zip(times, texts, strict=True)]


def names(text: str) -> list[str]:
    return sorted(
        {
            line.split("{")[0].split(" ")[0]
            for line in text.splitlines()
            if line and not line.startswith("#") and line.startswith("probe_")
        }
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench smtp_probe")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    blackbox = shutil.which("prometheus-blackbox-exporter")
    if blackbox is None:
        print("prometheus-blackbox-exporter is not installed (./run.sh bench installs it)", file=sys.stderr)
        return 1
    directory = Path(tempfile.mkdtemp(prefix="bench-smtp-"))
    with SmtpLab(directory / "smtp") as smtp:
        target = smtp.target("onprem")
        bb_port, ex_port = free_port("127.0.0.1"), free_port("127.0.0.1")
        (directory / "blackbox.yml").write_text(BLACKBOX_MODULE)
        probes = {
            "modules": {
                "hybrid": {
                    "timeout_seconds": 5,
                    "ehlo_hostname": "bench.lab.example",
                    "expected_tls_certificate_name": "CN=mail.contoso.com, O=Contoso Ltd",
                }
            },
            "allowed_targets": [target],
        }
        config = write_config(None, directory / "exporter.yml", port=ex_port, sections={"probes": probes})
        processes = [
            subprocess.Popen(
                [blackbox, f"--config.file={directory / 'blackbox.yml'}", f"--web.listen-address=127.0.0.1:{bb_port}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [sys.executable, "-m", "exporter", f"--config.file={config}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        ]
        try:
            wait_up(f"http://127.0.0.1:{bb_port}/metrics")
            wait_up(f"http://127.0.0.1:{ex_port}/-/healthy")
            bb_url = f"http://127.0.0.1:{bb_port}/probe?module=smtp_starttls&target={target}"
            ex_url = f"http://127.0.0.1:{ex_port}/probe?module=hybrid&target={target}"
            (bb_time, bb_text), (ex_time, ex_text) = timed([bb_url, ex_url], args.rounds)
        finally:
            for process in processes:
                stop_process(process)
    print(f"\nSMTP STARTTLS probe of {target} (lab aiosmtpd), median of {args.rounds} /probe round trips:")
    print(f"  blackbox_exporter (tcp prober, query_response)  {bb_time * 1000:7.1f} ms")
    print(
        f"  ad-exchange-exporter /probe                     {ex_time * 1000:7.1f} ms"
        f"   exporter / blackbox = {ex_time / bb_time:.2f}"
    )
    bb_names, ex_names = names(bb_text), names(ex_text)
    width = max(map(len, bb_names + ex_names)) + 2
    print(f"\n  {'blackbox_exporter reports':<{width}}{'ad-exchange-exporter reports'}")
    for i in range(max(len(bb_names), len(ex_names))):
        left = bb_names[i] if i < len(bb_names) else ""
        right = ex_names[i] if i < len(ex_names) else ""
        print(f"  {left:<{width}}{right}")
    shutil.rmtree(directory, ignore_errors=True)
    return 0
