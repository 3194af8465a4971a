"""Every collector on recorded inputs, encoded as /metrics serves it, against the committed golden file."""

from __future__ import annotations

import subprocess

from tests import golden
from tests.helpers import require_binary


def test_exposition_equals_the_golden_file() -> None:
    produced = golden.exposition()
    expected = golden.GOLDEN.read_text(encoding="utf-8")
    assert produced == expected, "the exposition changed; if on purpose, regenerate: python -m tests.golden"


def test_promtool_finds_nothing_to_lint_in_the_golden_file() -> None:
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=golden.GOLDEN.read_bytes(), capture_output=True, check=False
    )
    assert result.returncode == 0 and not result.stdout and not result.stderr, result.stdout + result.stderr
