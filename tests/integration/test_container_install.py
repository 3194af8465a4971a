"""The Dockerfile cannot be built here (no container runtime), so its build stage is replayed instead: its COPY
lines into a clean directory, its RUN lines (other than apt-get) with /opt/venv in a temporary place, and then the
image's ENTRYPOINT, CMD and HEALTHCHECK run against what was installed."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lab import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def stages() -> list[Stage]:
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # continuation lines
    out: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            out.append(Stage(parts[0], parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None))
        elif out:
            out[-1].instructions.append((keyword, args.strip()))
    return out


def test_dockerfile_shape() -> None:
    build, final = stages()
    assert build.name == "build" and final.name is None
    assert build.image == final.image == "${PYTHON_IMAGE}"
    # Nothing to compile with in the final stage, and only the virtual environment comes over.
    final_runs = " ".join(final.all("RUN"))
    assert not re.search(r"\b(gcc|g\+\+|make|[a-z0-9-]+-dev)\b", final_runs), final_runs
    assert final.all("COPY") == ["--from=build /opt/venv /opt/venv"]
    user = final.all("USER")[-1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) >= 1000
    assert final.all("HEALTHCHECK")
    chart_values = (ROOT / "helm" / "ad-exchange-exporter" / "values.yaml").read_text()
    assert f"runAsUser: {user.split(':')[0]}" in chart_values  # the chart runs the image's own user


def test_build_stage_install_steps_make_a_working_exporter(tmp_path: Path) -> None:
    build, final = stages()
    src, venv = tmp_path / "src", tmp_path / "venv"
    src.mkdir()
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    for keyword, args in build.instructions:
        if keyword == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
        elif keyword == "COPY":
            *sources, _destination = args.split()
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(origin, src / source, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(origin, src / source)
        elif keyword == "RUN" and not args.startswith("apt-get"):
            # The image's python is the base image's; here, the interpreter running the tests.
            command = args.replace("/opt/venv", str(venv))
            command = re.sub(r"(^|&& )python ", rf"\g<1>{shlex.quote(sys.executable)} ", command)
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=src,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            assert result.returncode == 0, f"RUN {args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    # The installed package is the copy in the venv, with its type marker, not the repository checkout.
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import exporter, pathlib; "
            "p = pathlib.Path(exporter.__file__).parent; print(p); print((p / 'py.typed').exists())",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(venv)) and where[1] == "True"

    # The image's ENTRYPOINT and CMD, with the config and listen address of this test.
    entrypoint = json.loads(final.all("ENTRYPOINT")[-1])
    cmd = json.loads(final.all("CMD")[-1])
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(f"state: {{path: {tmp_path / 'state.db'}}}\n")
    argv = [
        a.replace("/etc/ad-exchange-exporter/config.yml", str(config)).replace("0.0.0.0:9733", f"127.0.0.1:{port}")
        for a in cmd
    ]
    process = subprocess.Popen(
        [str(venv / "bin" / entrypoint[0]), *entrypoint[1:], *argv],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    healthcheck = json.loads(final.all("HEALTHCHECK")[-1].split("CMD", 1)[1])
    assert healthcheck[:3] == ["python", "-m", "exporter.healthcheck"]
    probe = [str(venv / "bin" / "python"), *healthcheck[1:-1], healthcheck[-1].replace("9733", str(port))]
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(probe, capture_output=True, check=False).returncode != 0:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the HEALTHCHECK never passed"
            time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert "ad_exchange_exporter_build_info" in response.read().decode()
    finally:
        stop_process(process)
    # And once it is gone the HEALTHCHECK says so.
    assert subprocess.run(probe, capture_output=True, check=False).returncode == 1
