"""The one rule for secrets in URIs: redact before anything is printed, logged, stored or keyed.

URIs carry secrets in three places: user info (`https://user:pass@host`, `s3://key:secret@bucket`),
the query string (pre-signed URLs: `X-Amz-Signature=`, `token=`, `sig=`) and the fragment. A
redacted URI keeps the scheme, host, port and path, which is what a person needs to find the
object again. Error texts from libraries (requests, botocore, FFmpeg) quote the URIs they were
given, so free text is scrubbed the same way before it reaches a `videos` row, a log or a terminal.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# scheme://[userinfo@]rest, where rest runs to whitespace or a quote/bracket that ends a URI in prose.
_URI_IN_TEXT = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^\s'\"<>()\[\]]*)")


def redact(uri: str) -> str:
    """`uri` without user info, query string or fragment; a plain path is returned unchanged."""
    parts = urlsplit(uri)
    if not parts.scheme or len(parts.scheme) == 1:  # a path (or a Windows drive letter)
        return uri
    try:
        host, port = parts.hostname or "", parts.port
    except ValueError:  # a malformed port: keep the host part, drop everything after ':'
        host, port = parts.netloc.rsplit("@", 1)[-1].split(":", 1)[0], None
    netloc = host + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def has_secrets(uri: str) -> bool:
    """Whether `uri` carries user info or a query string (what `redact` would remove)."""
    parts = urlsplit(uri)
    return bool(parts.scheme) and len(parts.scheme) > 1 and ("@" in parts.netloc or bool(parts.query))


def scrub(text: str) -> str:
    """Every URI inside free text redacted (user info, query and fragment removed)."""
    return _URI_IN_TEXT.sub(lambda m: redact(m.group(1) + m.group(2)), text)


__all__ = ["has_secrets", "redact", "scrub"]
