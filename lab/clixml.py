"""CLIXML for objects the lab builds to a cmdlet's schema (Exchange's, Windows' CIM classes), one document each."""

from __future__ import annotations

import datetime as dt
import itertools
from xml.sax.saxutils import escape


class Builder:
    """CLIXML for one document; RefIds count from 0 within it."""

    def __init__(self) -> None:
        self._ids = itertools.count()

    def obj(self, types: list[str], to_string: str, props: str, name: str | None = None) -> str:
        ref = next(self._ids)
        n = f' N="{escape(name)}"' if name else ""
        tn = "".join(f"<T>{escape(t)}</T>" for t in types)
        return (
            f'<Obj{n} RefId="{ref}"><TN RefId="{ref}">{tn}</TN><ToString>{escape(to_string)}</ToString>'
            f"<Props>{props}</Props></Obj>"
        )

    def enum(self, name: str, enum_type: str, text: str, number: int) -> str:
        ref = next(self._ids)
        return (
            f'<Obj N="{name}" RefId="{ref}"><TN RefId="{ref}"><T>{enum_type}</T><T>System.Enum</T>'
            f"<T>System.ValueType</T><T>System.Object</T></TN><ToString>{escape(text)}</ToString>"
            f"<I32>{number}</I32></Obj>"
        )

    def array(self, name: str, type_name: str, items: str) -> str:
        """A property holding a list: ``items`` are the elements' XML (``<S>a</S>``, objects)."""
        ref = next(self._ids)
        return (
            f'<Obj N="{name}" RefId="{ref}"><TN RefId="{ref}"><T>{type_name}</T><T>System.Array</T>'
            f"<T>System.Object</T></TN><LST>{items}</LST></Obj>"
        )

    def wrapped(self, name: str, type_name: str, text: str) -> str:
        ref = next(self._ids)
        return (
            f'<Obj N="{name}" RefId="{ref}"><TN RefId="{ref}"><T>{type_name}</T><T>System.Object</T></TN>'
            f"<ToString>{escape(text)}</ToString></Obj>"
        )


def s_(name: str, value: str | None) -> str:
    return f'<Nil N="{name}" />' if value is None else f'<S N="{name}">{escape(value)}</S>'


def dt_(name: str, when: dt.datetime | None) -> str:
    if when is None:
        return f'<Nil N="{name}" />'
    return f'<DT N="{name}">{when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")}0Z</DT>'
