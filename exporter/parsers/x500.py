"""X.500 names as Windows and Exchange write them, and comparing them as Exchange Online does.

Get-ExchangeCertificate, TlsCertificateName and the certificate dialogs show a subject the way Windows'
``X500DistinguishedName.Name`` renders it: ``CN=mail.contoso.com, OU=IT, O=Contoso, L=Cologne, S=NRW, C=DE`` -
the most specific RDN first (as RFC 4514), ``", "`` between RDNs, ``S`` for the state and ``E`` for the e-mail
address, and a value with a separator in it double-quoted (``O="Contoso, Ltd"``) rather than escaped. Labels use
that form, so they read exactly like what admins compare them with.

A certificate whose ``C=`` is not two letters (``C=Germany``) is valid enough for Windows; ``cryptography`` warns
about it each time it builds the name. The warning is silenced here, where names are read, and nowhere else.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

# CertNameToStr's keys (CERT_X500_NAME_STR); any other attribute is written as OID.<dotted>.
_WINDOWS_KEYS = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "S",
    NameOID.COUNTRY_NAME: "C",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.EMAIL_ADDRESS: "E",
    NameOID.TITLE: "T",
    NameOID.GIVEN_NAME: "G",
    NameOID.INITIALS: "I",
    NameOID.SURNAME: "SN",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.POSTAL_CODE: "PostalCode",
    NameOID.USER_ID: "UID",
}
# Other spellings of the same keys (RFC 4514, OpenSSL), for comparing what an admin typed.
_ALIASES = {"ST": "S", "EMAIL": "E", "EMAILADDRESS": "E", "STREETADDRESS": "STREET", "GN": "G", "SURNAME": "SN"}
_NEEDS_QUOTES = re.compile(r'[,+=";<>#\r\n]|^\s|\s$')
_SILENCE = threading.Lock()  # catch_warnings changes process-wide state: one reader at a time


@dataclass(frozen=True)
class CertificateNames:
    subject: str  # Windows' form
    issuer: str
    common_name: str
    organization: str


def _value(attribute: x509.NameAttribute[str | bytes]) -> str:
    value = attribute.value
    text = value.hex() if isinstance(value, bytes) else value
    if _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def windows_name(name: x509.Name) -> str:
    """``CN=domain.com, OU=IT, O=Contoso, L=Cologne, S=NRW, C=Germany`` (multi-valued RDNs joined by ``+``)."""
    rdns = []
    for rdn in reversed(name.rdns):
        parts = [f"{_WINDOWS_KEYS.get(a.oid, 'OID.' + a.oid.dotted_string)}={_value(a)}" for a in rdn]
        rdns.append(" + ".join(parts))
    return ", ".join(rdns)


def certificate_names(cert: x509.Certificate) -> CertificateNames:
    """Subject and issuer in Windows' form, with the CN and O of the subject; never warns."""
    with _SILENCE, warnings.catch_warnings():
        # "Country names should be two characters" / "Attribute's length must be >= 2 and <= 2"
        warnings.filterwarnings("ignore", message=r"(Country names|Attribute's length)", category=UserWarning)
        subject, issuer = cert.subject, cert.issuer

    def first(oid: x509.ObjectIdentifier) -> str:
        values = subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""

    return CertificateNames(
        windows_name(subject), windows_name(issuer), first(NameOID.COMMON_NAME), first(NameOID.ORGANIZATION_NAME)
    )


def split_name(text: str) -> list[tuple[str, str]]:
    """(key, value) of each attribute of a DN in Windows' or RFC 4514 form: quoted or escaped separators, ``,``
    or ``;`` between RDNs, ``+`` inside one."""
    parts: list[tuple[str, str]] = []
    current, quoted, escaped = "", False, False
    for char in text:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
            current += char
        elif char in ",;+" and not quoted:
            parts.append(_attribute(current))
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(_attribute(current))
    return [p for p in parts if p != ("", "")]


def _attribute(text: str) -> tuple[str, str]:
    key, _, value = text.strip().partition("=")
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('""', '"')
    key = key.strip().upper()
    return _ALIASES.get(key, key), value


def same_name(a: str, b: str) -> bool:
    """Every attribute equal (keys in any spelling, values case-insensitive), in any order."""

    def norm(text: str) -> list[tuple[str, str]]:
        return sorted((key, " ".join(value.lower().split())) for key, value in split_name(text))

    return norm(a) == norm(b)
