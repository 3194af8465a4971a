"""Follows log files matched by globs, across rotations, restarts and truncations.

A file is known by its identity (device, inode) and a digest of its first bytes, so that:
- rename-and-create: the renamed file (found again by inode in its directory) is read to its end before the
  new one; nothing between the last read and the rename is lost;
- copytruncate: a file shorter than the offset, or whose first bytes changed, is read again from the start;
- inode reuse after a delete is not mistaken for the old file.
Only complete lines are returned: a partial last line waits for its newline. A UTF-8 BOM is skipped; a line
longer than the limit is skipped and counted. The caller stores :meth:`Tailer.checkpoint` in the same
transaction as what it made of the lines, so a restart resumes exactly there. A directory that cannot be listed
(its permissions taken away, a share gone) is neither "no files" nor "files deleted": the files in it are kept
at their offsets and :attr:`Tailer.problems` says which directory and why, until it can be read again.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

BOM = b"\xef\xbb\xbf"


@dataclass
class _File:
    path: str
    dev: int
    ino: int
    offset: int = 0
    head: str = ""  # sha256 of the first head_len bytes
    head_len: int = 0
    skipping: bool = False  # inside an overlong line

    @property
    def identity(self) -> tuple[int, int]:
        return self.dev, self.ino


@dataclass(frozen=True)
class Lines:
    path: str
    lines: list[bytes]  # complete lines, without the line ending
    # Some line starts with "#" (a W3C/Exchange directive such as #Fields:), found without looking at each line.
    directives: bool = False
    identity: str = ""  # "device:inode": the file whatever it is renamed to
    start: int = 0  # offset of the first line: directives before it are in force


@dataclass
class TailStats:
    overlong_lines: int = 0
    truncations: int = 0
    rotations: int = 0
    vanished: int = 0  # files deleted before they were read to the end


def _fixed_directory(pattern: str) -> str:
    """The leading directories of a glob pattern before any wildcard."""
    parts: list[str] = []
    for part in os.path.dirname(pattern).split(os.sep):
        if glob.has_magic(part):
            break
        parts.append(part)
    return os.sep.join(parts) or (os.sep if pattern.startswith(os.sep) else ".")


def _digest(path: str, length: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read(length)).hexdigest()


class Tailer:
    def __init__(
        self,
        patterns: Sequence[str],
        start_at: Literal["end", "beginning"] = "end",
        max_line_bytes: int = 64 * 1024,
        head_bytes: int = 1024,
        chunk_bytes: int = 1024 * 1024,
        saved: dict[str, Any] | None = None,
    ) -> None:
        self.patterns = list(patterns)
        self.start_at = start_at
        self.max_line_bytes = max_line_bytes
        self.head_bytes = head_bytes
        self.chunk_bytes = chunk_bytes
        self.stats = TailStats()
        self._files: dict[tuple[int, int], _File] = {}
        # Heads and offsets of files found truncated (copytruncate): their copy continues from there.
        self._remnants: list[dict[str, Any]] = []
        self._initialised = False
        self.problems: list[str] = []  # directories the last poll could not list, with the reason
        if saved:
            self._initialised = bool(saved.get("initialised"))
            for entry in saved.get("files", []):
                state = _File(**entry)
                self._files[state.identity] = state
            self._remnants = list(saved.get("remnants", []))

    def checkpoint(self) -> dict[str, Any]:
        return {
            "initialised": self._initialised,
            "files": [asdict(f) for f in self._files.values()],
            "remnants": self._remnants,
        }

    @property
    def files(self) -> list[str]:
        return sorted(f.path for f in self._files.values())

    @property
    def identities(self) -> set[str]:
        return {f"{f.dev}:{f.ino}" for f in self._files.values()}

    def _matches(self) -> dict[tuple[int, int], str]:
        found: dict[tuple[int, int], str] = {}
        for pattern in self.patterns:
            for path in sorted(glob.glob(pattern)):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if os.path.isfile(path):
                    found.setdefault((st.st_dev, st.st_ino), path)
        return found

    def _unlistable(self) -> dict[str, str]:
        """Directories glob passes over in silence because they cannot be listed: each pattern's fixed leading
        directory, and those of the files followed. A directory that does not exist is not one of them."""
        directories = {_fixed_directory(p) for p in self.patterns} | {
            os.path.dirname(f.path) or "." for f in self._files.values()
        }
        out = {}
        for directory in sorted(directories):
            try:
                with os.scandir(directory):
                    pass
            except FileNotFoundError:
                continue
            except OSError as exc:
                out[directory] = exc.strerror or type(exc).__name__
        return out

    def _relocate(self, state: _File) -> str | None:
        """A file no glob matches any more: it was renamed (look in its directory by inode) or deleted."""
        directory = os.path.dirname(state.path) or "."
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if (st.st_dev, st.st_ino) == state.identity and entry.is_file(follow_symlinks=False):
                        return entry.path
        except OSError:
            return None
        return None

    def poll(self, max_bytes: int | None = None) -> list[Lines]:
        """Every complete line written since the last poll, oldest file first; :attr:`problems` lists the
        directories that could not be listed (their files wait at their offsets)."""
        unlistable = self._unlistable()
        self.problems = [f"cannot list {d}: {why}" for d, why in unlistable.items()]
        if unlistable and not self._initialised:
            return []  # a first poll waits, so that start_at="end" skips only what was there before us
        # The files followed in a directory that cannot be listed are held where they are: not taken for
        # deleted (they would be read again from the start once it can), not read, not matched anew.
        held = {i for i, f in self._files.items() if (os.path.dirname(f.path) or ".") in unlistable}
        matches = {i: path for i, path in self._matches().items() if i not in held}
        first = not self._initialised
        self._initialised = True
        out: list[Lines] = []
        budget = [max_bytes if max_bytes is not None else 1 << 62]
        # Files we follow that no glob matches any more (rotated away): finish them first.
        for identity, state in list(self._files.items()):
            if identity in matches or identity in held:
                continue
            path = self._relocate(state)
            if path is None:
                self.stats.vanished += 1
                del self._files[identity]
                continue
            if path != state.path:
                self.stats.rotations += 1
                state.path = path
            out.extend(self._read(state, budget))
            if self._at_end(state):
                del self._files[identity]

        # Then the matched files we already follow, then new ones, oldest first: a rotated file comes before
        # its successor, and a copy (copytruncate) is only looked at once its original has been read.
        def age(item: tuple[tuple[int, int], str]) -> float:
            try:
                return os.stat(item[1]).st_mtime
            except OSError:
                return 0.0

        ordered = sorted(matches.items(), key=age)
        for identity, path in ordered:
            known = self._files.get(identity)
            if known is not None:
                known.path = path
                out.extend(self._read(known, budget))
        for identity, path in ordered:
            if identity in self._files:
                continue
            fresh = _File(path, *identity)
            if first and self.start_at == "end":
                fresh.offset = os.path.getsize(path)
                self._remember_head(fresh)
            else:
                self._adopt(fresh)
            self._files[identity] = fresh
            out.extend(self._read(fresh, budget))
        return [chunk for chunk in out if chunk.lines]

    def _adopt(self, fresh: _File) -> None:
        """A new file that starts with the same bytes as one read before is its copy: go on where that left off."""
        candidates = [(f.head, f.head_len, f.offset, f.skipping) for f in self._files.values() if f.head_len]
        candidates += [(r["head"], r["head_len"], r["offset"], r["skipping"]) for r in self._remnants]
        try:
            size = os.path.getsize(fresh.path)
        except OSError:
            return
        for head, head_len, offset, skipping in candidates:
            if size >= offset and size >= head_len and _digest(fresh.path, head_len) == head:
                fresh.offset, fresh.head, fresh.head_len, fresh.skipping = offset, head, head_len, skipping
                self._remnants = [r for r in self._remnants if r["head"] != head]
                self.stats.rotations += 1
                return

    def _at_end(self, state: _File) -> bool:
        try:
            return os.path.getsize(state.path) <= state.offset
        except OSError:
            return True

    def _remember_head(self, state: _File) -> None:
        size = os.path.getsize(state.path)
        state.head_len = min(self.head_bytes, size)
        state.head = _digest(state.path, state.head_len)

    def _check_same_content(self, state: _File, size: int) -> None:
        """Truncated (copytruncate) or replaced under the same inode: start again from the beginning."""
        replaced = size < state.offset
        if not replaced and state.head_len and size >= state.head_len:
            replaced = _digest(state.path, state.head_len) != state.head
        if replaced:
            self.stats.truncations += 1
            if state.head_len:
                # Its copy, if one appears, holds what was not read yet.
                self._remnants = [
                    *self._remnants[-15:],
                    {
                        "head": state.head,
                        "head_len": state.head_len,
                        "offset": state.offset,
                        "skipping": state.skipping,
                    },
                ]
            state.offset, state.skipping, state.head_len, state.head = 0, False, 0, ""

    def _read(self, state: _File, budget: list[int]) -> list[Lines]:
        try:
            size = os.path.getsize(state.path)
        except OSError:
            return []
        self._check_same_content(state, size)
        begin = state.offset
        lines: list[bytes] = []
        directives = False
        with open(state.path, "rb") as handle:
            while state.offset < size and budget[0] > 0:
                handle.seek(state.offset)
                data = handle.read(min(self.chunk_bytes, size - state.offset, budget[0]))
                if not data:
                    break
                start = 0
                if state.offset == 0 and data.startswith(BOM):
                    start = len(BOM)
                end = data.rfind(b"\n")
                if end < start:
                    # No complete line in this chunk: wait for the newline, unless the line is already too long.
                    if len(data) - start >= self.max_line_bytes or state.skipping:
                        if not state.skipping:
                            self.stats.overlong_lines += 1
                        state.skipping = True
                        state.offset += len(data)
                        budget[0] -= len(data)
                        continue
                    break
                # Split the whole chunk and drop the unfinished tail: no copy of the chunk per read.
                block = data if start == 0 else data[start:]
                directives = directives or block.startswith(b"#") or b"\n#" in block
                if b"\r" in block:  # CRLF, as Windows writes: one pass in C, not one per line
                    block = block.replace(b"\r\n", b"\n")
                parts = block.split(b"\n")
                parts.pop()  # what follows the last newline: not a complete line yet
                if parts and parts[-1].endswith(b"\r"):
                    parts[-1] = parts[-1][:-1]
                if state.skipping:
                    state.skipping = False  # the first part ends the overlong line
                    parts = parts[1:]
                if parts and max(map(len, parts)) > self.max_line_bytes:
                    kept = [p for p in parts if len(p) <= self.max_line_bytes]
                    self.stats.overlong_lines += len(parts) - len(kept)
                    parts = kept
                lines.extend(parts)
                state.offset += end + 1
                budget[0] -= end + 1
        if state.head_len < min(self.head_bytes, state.offset):
            self._remember_head(state)
        return [Lines(state.path, lines, directives, f"{state.dev}:{state.ino}", begin)]
