"""The README's metric tables are generated from the declarations and must be current."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import reference
from exporter.metrics import declared


def test_readme_metric_tables_are_current() -> None:
    readme = Path(reference.README).read_text(encoding="utf-8")
    assert reference.render(readme) == readme, "run: python -m exporter.reference --write"


def test_every_declared_family_is_in_the_readme() -> None:
    readme = Path(reference.README).read_text(encoding="utf-8")
    missing = [name for name in declared() if not name.startswith(("test_", "fake_")) and f"`{name}`" not in readme]
    assert missing == []


def test_an_unknown_section_is_an_error() -> None:
    with pytest.raises(KeyError, match="metrics:nothing"):
        reference.render("<!-- metrics:nothing -->\n<!-- /metrics:nothing -->")
