"""Secrets out of what is logged or printed: passwords in URLs, API keys in error texts."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """`url` with the password of a ``user:password@`` part replaced by ***, for params and messages.

    Anything without a password (a plain path, a URL without credentials) comes back unchanged.
    """
    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def redact_secret(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` (an API key) replaced by ***; servers echo keys back."""
    return text.replace(secret, "***") if secret else text
