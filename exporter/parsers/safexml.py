"""XML from sources the exporter does not control, parsed with libxml2 (lxml) and nothing else allowed in.

No DTD is loaded, no entity is expanded, nothing is fetched from the network; a document that carries a DTD
(where entity bombs live: "billion laughs", external entities) is refused outright, as defusedxml refuses
entities. lxml's parser is several times faster than ElementTree's, which matters for a backlog of events.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from lxml import etree

_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


class XmlError(ValueError):
    """Not well-formed, or refused (a DTD)."""


class _Parser(threading.local):
    # lxml's parsers are not to be shared between threads: one each.
    def __init__(self) -> None:
        self.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            collect_ids=False,
            remove_comments=True,
            remove_pis=True,
        )


_LOCAL = _Parser()


def parse(text: str | bytes) -> Any:
    """The root element of ``text`` (an lxml element, with ElementTree's API)."""
    # In a str, a declaration would name an encoding the str no longer has; the characters are what count.
    data = _DECLARATION.sub("", text.lstrip("\ufeff"), count=1).encode("utf-8") if isinstance(text, str) else text
    try:
        root = etree.fromstring(data, _LOCAL.parser)
    except etree.XMLSyntaxError as exc:
        raise XmlError(str(exc)) from None
    if root is None:
        raise XmlError("no root element")
    if root.getroottree().docinfo.internalDTD is not None:
        raise XmlError("a DTD (and so entities) is refused")
    return root
