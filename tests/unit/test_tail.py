"""The tailer on real files: rotations, truncation, partial and overlong lines, BOM, restarts."""

from __future__ import annotations

import os
from pathlib import Path

from exporter.sources.tail import Tailer, _fixed_directory


def read(tailer: Tailer) -> list[bytes]:
    return [line for chunk in tailer.poll() for line in chunk.lines]


def test_start_at_end_skips_the_backlog_and_beginning_reads_it(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"old 1\nold 2\n")
    assert read(Tailer([str(log)], start_at="end")) == []
    assert read(Tailer([str(log)], start_at="beginning")) == [b"old 1", b"old 2"]


def test_partial_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    tailer = Tailer([str(log)], start_at="beginning")
    with log.open("ab") as out:
        out.write(b"one\ntw")
        out.flush()
        assert read(tailer) == [b"one"]
        out.write(b"o\r\n")
        out.flush()
        assert read(tailer) == [b"two"]


def test_bom_and_overlong_lines(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"\xef\xbb\xbf#Fields: x\n" + b"y" * 100 + b"\nafter\n")
    tailer = Tailer([str(log)], start_at="beginning", max_line_bytes=50)
    assert read(tailer) == [b"#Fields: x", b"after"]
    assert tailer.stats.overlong_lines == 1
    # An overlong line still being written is skipped as it grows, without holding the reader.
    with log.open("ab") as out:
        out.write(b"z" * 80)
        out.flush()
        assert read(tailer) == []
        out.write(b"z" * 80 + b"\nnext\n")
    assert read(tailer) == [b"next"]
    assert tailer.stats.overlong_lines == 2


def test_rename_and_create_reads_the_old_file_to_its_end_first(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"1\n")
    tailer = Tailer([str(log)], start_at="beginning")
    assert read(tailer) == [b"1"]
    with log.open("ab") as out:
        out.write(b"2\n")  # written, not yet read, when the file is rotated
    os.rename(log, tmp_path / "app.log.1")
    log.write_bytes(b"3\n")
    assert read(tailer) == [b"2", b"3"]
    assert tailer.stats.rotations == 1


def test_copytruncate_starts_again_from_the_beginning(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"first line of the old content\nsecond\n")
    tailer = Tailer([str(log)], start_at="beginning")
    assert len(read(tailer)) == 2
    log.write_bytes(b"new\n")  # truncated in place, same inode
    assert read(tailer) == [b"new"]
    # Truncated and grown past the old offset before the next poll: the changed head gives it away.
    log.write_bytes(b"NEWER first line, longer than before..........\nmore\n")
    assert read(tailer) == [b"NEWER first line, longer than before..........", b"more"]
    assert tailer.stats.truncations == 2


def test_restart_from_checkpoint_neither_repeats_nor_loses(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\nb\n")
    tailer = Tailer([str(tmp_path / "*.log")], start_at="beginning")
    assert read(tailer) == [b"a", b"b"]
    saved = tailer.checkpoint()
    with log.open("ab") as out:
        out.write(b"c\n")
    restarted = Tailer([str(tmp_path / "*.log")], start_at="end", saved=saved)
    assert read(restarted) == [b"c"]
    # A file that appears after the first poll is read from its start, whatever start_at says.
    (tmp_path / "new.log").write_bytes(b"d\n")
    assert read(restarted) == [b"d"]


def test_a_replaced_file_with_a_reused_inode_is_read_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"original content here\n")
    tailer = Tailer([str(log)], start_at="beginning")
    read(tailer)
    saved = tailer.checkpoint()
    log.unlink()
    log.write_bytes(b"replacement content, another file\n")
    restarted = Tailer([str(log)], saved=saved)
    assert read(restarted) == [b"replacement content, another file"]


def test_copytruncate_with_the_copy_in_the_glob_neither_repeats_nor_loses(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"#Date: 2026-11-27 07:00:00.123\nline 1\n")
    tailer = Tailer([str(tmp_path / "app.log*")], start_at="beginning")
    assert read(tailer) == [b"#Date: 2026-11-27 07:00:00.123", b"line 1"]
    with log.open("ab") as out:
        out.write(b"line 2\n")  # written, not yet read, when logrotate copies and truncates
    (tmp_path / "app.log.1").write_bytes(log.read_bytes())
    log.write_bytes(b"")
    with log.open("ab") as out:
        out.write(b"#Date: 2026-11-27 08:00:00.456\nline 3\n")
    assert sorted(read(tailer)) == sorted([b"line 2", b"#Date: 2026-11-27 08:00:00.456", b"line 3"])
    assert read(tailer) == []


def test_a_copy_seen_before_its_original_is_truncated_is_not_read_twice(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"#Date: 2026-11-27 07:00:00.123\nline 1\nline 2\n")
    tailer = Tailer([str(tmp_path / "app.log*")], start_at="beginning")
    assert len(read(tailer)) == 3
    (tmp_path / "app.log.1").write_bytes(log.read_bytes())  # copied; not yet truncated at the next poll
    assert read(tailer) == []
    log.write_bytes(b"#Date: 2026-11-27 08:00:00.456\nnew\n")
    assert read(tailer) == [b"#Date: 2026-11-27 08:00:00.456", b"new"]


def test_the_fixed_directory_of_a_pattern_is_what_is_listed_for_permissions() -> None:
    assert _fixed_directory("/logs/W3SVC1/u_ex*.log") == "/logs/W3SVC1"
    assert _fixed_directory("/logs/W3SVC*/u_ex*.log") == "/logs"
    assert _fixed_directory("/*/x.log") == "/"
    assert _fixed_directory("u_ex*.log") == "."
    assert _fixed_directory("logs/[ab]/x.log") == "logs"
