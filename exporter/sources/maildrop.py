"""Messages dropped as files (.eml from a journal copy, an export, a pickup directory), each handed over once."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

HEADER_BYTES = 256 * 1024  # a header block larger than this is not a message's


class DropDirectory:
    """Files matched by globs; a file counts as new until read at its current mtime (a rewrite is new again)."""

    def __init__(self, patterns: Sequence[str], seen: dict[str, float] | None = None) -> None:
        self.patterns = list(patterns)
        self.seen: dict[str, float] = dict(seen or {})  # path -> mtime when read

    def new_messages(self) -> list[tuple[str, float, bytes | None]]:
        """(path, mtime, the first HEADER_BYTES or None when unreadable) of each new file, oldest first.

        Files that are gone are forgotten, so ``seen`` stays as large as the directories are.
        """
        present: dict[str, float] = {}
        for pattern in self.patterns:
            for path in glob.glob(pattern):
                try:
                    present[path] = os.stat(path).st_mtime
                except OSError:
                    continue
        out: list[tuple[str, float, bytes | None]] = []
        for path, mtime in sorted(present.items(), key=lambda kv: kv[1]):
            if self.seen.get(path) == mtime:
                continue
            self.seen[path] = mtime
            try:
                with open(path, "rb") as handle:
                    out.append((path, mtime, handle.read(HEADER_BYTES)))
            except OSError:
                out.append((path, mtime, None))
        self.seen = {p: m for p, m in self.seen.items() if p in present}
        return out
