"""CLIXML (PowerShell's object serialisation, MS-PSRP 2.2.5) to plain Python values.

PowerShell remoting carries every output object as one CLIXML ``<Obj>`` document, and Export-Clixml
writes the same form inside ``<Objs>``. Objects become :class:`PSObject` (a dict of their adapted and
extended properties that also keeps the type names and the ToString text), lists and dictionaries
become ``list`` and ``dict``, dates become aware ``datetime``. Strings keep PowerShell's ``_xHHHH_``
escapes decoded. Nothing is evaluated or looked up: this is data only.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from exporter.parsers import safexml

_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<days>\d+)D)?(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
_DATETIME = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?(?P<zone>Z|[+-]\d{2}:\d{2})?$"
)
_CONTAINERS = ("LST", "IE", "STK", "QUE")


class ClixmlError(ValueError):
    """CLIXML that cannot be read; the message says which element and why."""


class PSObject(dict[str, Any]):
    """A deserialised PowerShell object: property name -> value, plus its type names and ToString."""

    __slots__ = ("to_string", "type_names", "value")

    def __init__(self, type_names: tuple[str, ...] = (), to_string: str | None = None, value: Any = None) -> None:
        super().__init__()
        self.type_names = type_names
        self.to_string = to_string
        # The primitive an object wraps: an enum's number, a boxed string with notes added.
        self.value = value

    def __str__(self) -> str:
        if self.to_string is not None:
            return self.to_string
        return "" if self.value is None else str(self.value)

    def __repr__(self) -> str:
        kind = self.type_names[0] if self.type_names else "PSObject"
        return f"<{kind} {self.to_string!r} {dict.__repr__(self)}>"


def unescape(text: str) -> str:
    """Decode PowerShell's ``_xHHHH_`` escapes (CR/LF, control characters, surrogate halves)."""
    if "_x" not in text:
        return text
    if "_x005F_" not in text and "_x005f_" not in text:
        # Line ends are nearly all there is (an event's XML, a multi-line message): replaced without the regex.
        text = text.replace("_x000D_", "\r").replace("_x000A_", "\n")
        if "_x" not in text:
            return text
    halves = False

    def char(match: re.Match[str]) -> str:
        nonlocal halves
        code = int(match.group(1), 16)
        halves = halves or 0xD800 <= code <= 0xDFFF
        return chr(code)

    decoded = _ESCAPE.sub(char, text)
    # Characters outside the BMP are escaped as two surrogate halves; join them (only then: it costs a copy).
    return decoded.encode("utf-16", "surrogatepass").decode("utf-16") if halves else decoded


def parse_datetime(text: str) -> datetime:
    """xs:dateTime as .NET writes it: up to 7 fractional digits, 'Z', an offset, or no zone (taken as UTC)."""
    match = _DATETIME.match(text.strip())
    if not match:
        raise ClixmlError(f"DT: not a date and time: {text!r}")
    value = datetime.fromisoformat(match["base"])
    if match["frac"]:
        value += timedelta(microseconds=round(int(match["frac"][:7].ljust(7, "0")) / 10))
    zone = match["zone"]
    if zone is None or zone == "Z":
        return value.replace(tzinfo=UTC)
    sign = -1 if zone[0] == "-" else 1
    return value.replace(tzinfo=timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))))


def parse_duration(text: str) -> float:
    """xs:duration (a .NET TimeSpan, "PT9.5S", "P1DT2H") in seconds."""
    match = _DURATION.match(text.strip())
    if not match or text.strip() in ("P", "PT", "-P"):
        raise ClixmlError(f"TS: not a duration: {text!r}")
    seconds = (
        int(match["days"] or 0) * 86400
        + int(match["hours"] or 0) * 3600
        + int(match["minutes"] or 0) * 60
        + float(match["seconds"] or 0)
    )
    return -seconds if match["sign"] else seconds


def _text(element: ET.Element) -> str:
    return unescape(element.text or "")


def _int(element: ET.Element) -> int:
    try:
        return int((element.text or "").strip())
    except ValueError:
        raise ClixmlError(f"{element.tag}: not an integer: {element.text!r}") from None


def _float(element: ET.Element) -> float:
    try:
        return float((element.text or "").strip())
    except ValueError:
        raise ClixmlError(f"{element.tag}: not a number: {element.text!r}") from None


def _bytes(element: ET.Element) -> bytes:
    try:
        return base64.b64decode(element.text or "", validate=True)
    except ValueError:
        raise ClixmlError("BA: not base64") from None


_PRIMITIVES: dict[str, Callable[[ET.Element], Any]] = {
    "S": _text,
    "XD": _text,
    "SBK": _text,
    "URI": _text,
    "Version": _text,
    "G": _text,
    "C": lambda e: chr(_int(e)),
    "B": lambda e: (e.text or "").strip().lower() == "true",
    "DT": lambda e: parse_datetime(e.text or ""),
    "TS": lambda e: parse_duration(e.text or ""),
    "By": _int,
    "SB": _int,
    "U16": _int,
    "I16": _int,
    "U32": _int,
    "I32": _int,
    "U64": _int,
    "I64": _int,
    "Sg": _float,
    "Db": _float,
    "D": _float,
    "BA": _bytes,
    "Nil": lambda e: None,
    # Secure strings are encrypted with the session key; an exporter never needs them.
    "SS": lambda e: None,
}


class _Reader:
    """One CLIXML document: RefId and TN RefId tables are per document."""

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}
        self.type_lists: dict[str, tuple[str, ...]] = {}

    def value(self, element: ET.Element) -> Any:
        tag = element.tag
        primitive = _PRIMITIVES.get(tag)
        if primitive is not None:
            return primitive(element)
        if tag == "Obj":
            return self.obj(element)
        if tag == "Ref":
            ref = element.get("RefId", "")
            if ref not in self.objects:
                raise ClixmlError(f"Ref: RefId {ref!r} does not name an earlier object")
            return self.objects[ref]
        raise ClixmlError(f"unknown element <{tag}>")

    def obj(self, element: ET.Element) -> Any:
        ref = element.get("RefId")
        type_names: tuple[str, ...] = ()
        to_string: str | None = None
        props: list[ET.Element] = []
        body: ET.Element | None = None
        for child in element:
            tag = child.tag
            if tag == "TN":
                type_names = tuple(_text(t) for t in child if t.tag == "T")
                if child.get("RefId") is not None:
                    self.type_lists[child.get("RefId", "")] = type_names
            elif tag == "TNRef":
                type_names = self.type_lists.get(child.get("RefId", ""), ())
            elif tag == "ToString":
                to_string = _text(child)
            elif tag in ("Props", "MS"):
                props.extend(child)
            else:
                body = child
        if body is not None and body.tag in _CONTAINERS:
            items: list[Any] = []
            if ref is not None:
                self.objects[ref] = items
            items.extend(self.value(item) for item in body)
            return items
        if body is not None and body.tag == "DCT":
            mapping: dict[Any, Any] = {}
            if ref is not None:
                self.objects[ref] = mapping
            for entry in body:
                key = value = None
                for part in entry:
                    if part.get("N") == "Key":
                        key = self.value(part)
                    elif part.get("N") == "Value":
                        value = self.value(part)
                mapping[key if not isinstance(key, dict | list) else str(key)] = value
            return mapping
        result = PSObject(type_names, to_string)
        if ref is not None:
            self.objects[ref] = result
        if body is not None:
            result.value = self.value(body)
        for prop in props:
            name = prop.get("N")
            if name is None:
                continue
            result[unescape(name)] = self.value(prop)
        return result


def _strip_namespaces(root: ET.Element) -> ET.Element:
    for element in root.iter():
        if element.tag.startswith("{"):
            element.tag = element.tag.split("}", 1)[1]
    return root


def _parse_xml(text: str | bytes, what: str) -> ET.Element:
    try:
        # The server may not be trustworthy: no DTDs, no entity expansion.
        root = safexml.parse(text)
    except safexml.XmlError as exc:
        raise ClixmlError(f"{what}: not well-formed XML: {exc}") from None
    return _strip_namespaces(root)


def parse_object(text: str | bytes) -> Any:
    """One serialised value, as a PSRP PIPELINE_OUTPUT message carries it (``<Obj>``, ``<S>``, ...)."""
    root = _parse_xml(text, "object")
    return _Reader().value(root)


def parse_document(text: str | bytes) -> list[Any]:
    """An Export-Clixml file (``<Objs>``): the list of objects in it."""
    root = _parse_xml(text, "document")
    if root.tag != "Objs":
        raise ClixmlError(f"document: expected <Objs>, found <{root.tag}>")
    reader = _Reader()
    return [reader.value(child) for child in root]


def text_of(value: Any) -> str:
    """The display text of a property: a PSObject's ToString, a string as is, None as ''."""
    if value is None:
        return ""
    return str(value)


class CmdletDataError(ValueError):
    """A cmdlet's object that lacks a property or holds a malformed one: names the cmdlet, the object and why.
    Callers count and skip the object."""

    def __init__(self, cmdlet: str, item: str, detail: str) -> None:
        self.cmdlet = cmdlet
        where = f"{cmdlet} {item}" if item else cmdlet
        super().__init__(f"{where}: {detail}")


def integer_of(value: Any, cmdlet: str, name: str, item: str = "", missing: int | None = None) -> int:
    """A property that must hold a whole number (an Int32 or its text); a boolean is not one. ``missing`` is the
    value of an absent or empty property; without it, that is malformed like any other."""
    text = text_of(value).strip()
    if not text and missing is not None:
        return missing
    if isinstance(value, bool) or not re.fullmatch(r"-?\d+", text):
        raise CmdletDataError(cmdlet, item, f"property {name} is not a number: {text[:40]!r}")
    return int(text)


def as_list(value: Any) -> list[Any]:
    """A property that holds one value or a list of them (PowerShell unrolls a one-item list), as a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def cmdlet_object(value: Any, cmdlet: str) -> Mapping[str, Any]:
    """The deserialised object's properties, or CmdletDataError if the output is not an object."""
    if not isinstance(value, Mapping):
        raise CmdletDataError(cmdlet, "", f"expected an object, got {type(value).__name__}")
    return value


def required_text(obj: Mapping[str, Any], name: str, cmdlet: str, item: str = "") -> str:
    text = text_of(obj.get(name)).strip()
    if not text:
        raise CmdletDataError(cmdlet, item, f"property {name} is missing or empty")
    return text


def parse_each(xml_objects: list[str], parse: Callable[[Any], Any], errors: list[str]) -> list[Any]:
    """``parse`` on each output object's CLIXML; an object that cannot be read is skipped, its reason kept in
    ``errors`` (for the parse-error count and the log)."""
    out = []
    for text in xml_objects:
        try:
            out.append(parse(parse_object(text)))
        except (ClixmlError, CmdletDataError) as exc:
            errors.append(str(exc))
    return out
