"""The configuration's building blocks: a strict model, readable-file and secret fields, the YAML loader.

Every error is reported at once with its place (``active_directory[0].bind.password_file: file not found``, or
``FILE:LINE:COLUMN`` for YAML that does not parse). Secrets are read from ``*_file`` paths or environment
variables, never written inline, and are kept as :class:`pydantic.SecretStr` so that no repr, log line or page
shows them.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator


class ConfigError(Exception):
    """A configuration that cannot be used; ``errors`` holds one ``path: message`` line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s):\n" + "\n".join(f"  {e}" for e in errors))


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ModelT = TypeVar("ModelT", bound=BaseModel)


def readable_file(path: Path | None) -> Path | None:
    if path is None:
        return None
    try:
        # exists() raises for what no file system can hold (a name too long, found by fuzzing); os.stat names it.
        found = path.stat()
    except FileNotFoundError:
        raise ValueError("file not found") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot be looked up: {getattr(exc, 'strerror', None) or exc}") from None
    if not stat.S_ISREG(found.st_mode):
        raise ValueError("not a regular file")
    if not os.access(path, os.R_OK):
        raise ValueError("file not readable")
    return path


ReadableFile = Annotated[Path, Field(description="path to a readable file")]


Seconds = Annotated[float, Field(gt=0)]


class Secret(StrictModel):
    """A user and a password read from a file or an environment variable, never from the YAML itself."""

    user: str | None = None
    password_file: ReadableFile | None = None
    password_env: str | None = None
    # Resolved from password_file / password_env at load time; never set in YAML.
    password: SecretStr | None = Field(default=None, exclude=True)

    _check_password_file = field_validator("password_file")(readable_file)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError("inline passwords are not accepted; use password_file or password_env")
        return data

    def _read_secret(self) -> str | None:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("password_file and password_env are mutually exclusive")
        secret: str | None = None
        if self.password_file is not None:
            secret = self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            if not secret:
                raise ValueError("password_file: file is empty")
        elif self.password_env is not None:
            secret = os.environ.get(self.password_env)
            if not secret:
                raise ValueError(f"password_env: environment variable {self.password_env} is not set")
        if secret is not None:
            object.__setattr__(self, "password", SecretStr(secret))
        return secret


class Problems:
    """Model-level checks collect every problem, then raise them together (pydantic reports one per validator)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, field: str, message: str) -> None:
        self.lines.append(f"{field}: {message}")

    def unique(self, field: str, names: Iterable[str], what: str) -> None:
        """``field: a NAME appears twice`` when two of ``names`` are the same but for case."""
        folded = [name.lower() for name in names]
        if len(set(folded)) != len(folded):
            self.add(field, f"{what} appears twice")

    def append(self, line: str) -> None:
        """A problem already written as ``field: message``."""
        self.lines.append(line)

    def check(self) -> None:
        if self.lines:
            raise ValueError("\n".join(self.lines))


def format_location(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


_PYDANTIC_PREFIX = re.compile(r"^(Value error|Assertion failed), ")


def _format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        # A model-level check reports all its problems in one message, a line each (see Problems).
        for message in _PYDANTIC_PREFIX.sub("", err["msg"]).split("\n"):
            # Model-level validators name their field at the start of the message: fold it into the path.
            head, sep, rest = message.partition(": ")
            where = loc
            if sep and re.fullmatch(r"[a-z_]+( or [a-z_]+)?", head):
                where, message = [*loc, head], rest
            lines.append(f"{format_location(where)}: {message}")
    return lines


def parse_model(text: str, source: str, model: type[ModelT]) -> ModelT:
    """YAML text to a validated model; every error names its place (file:line:column or the field's path)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}: invalid YAML: {problem}"]) from None
    except ValueError as exc:  # PyYAML's own constructors: a date such as 2026-02-30 (found by fuzzing)
        raise ConfigError(source, [f"{source}: invalid YAML value: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _format_errors(exc)) from None


def read_model(path: Path, model: type[ModelT]) -> ModelT:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"{path}: {exc.strerror or exc}"]) from None
    return parse_model(text, str(path), model)
