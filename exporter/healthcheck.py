"""``python -m exporter.healthcheck [URL]``: exit 0 if the exporter answers /-/healthy, 1 if not.

For container HEALTHCHECKs, where no curl is installed. It probes the exporter on its own loopback, so with TLS on
it does not check the certificate (which names the service, not 127.0.0.1); it sends no credentials, as
/-/healthy needs none.
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9733/-/healthy"


def check(url: str, timeout: float = 5) -> bool:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    context = ssl._create_unverified_context() if url.startswith("https://") else None  # noqa: S323
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    url = args[0] if args else DEFAULT_URL
    healthy = check(url)
    print(f"{url}: {'healthy' if healthy else 'not healthy'}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
