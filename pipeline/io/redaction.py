"""The one rule for secrets in URIs: redact before anything is printed, logged, stored or keyed.

URLs carry secrets in three places: user info (`https://user:pass@host`), the query string
(pre-signed URLs: `X-Amz-Signature=`, `token=`, `sig=`) and the fragment. A redacted URL keeps the
scheme, host, port and path, which is what a person needs to find the object again.

Object-store URIs (``s3://``, ``gs://``, ``az://``) have no query and no fragment: everything after
the bucket is the key, verbatim (`pipeline.io.uris`), and a key may hold `?` or `#`. Redacting one
drops only user info (``s3://key:secret@bucket``); cutting it at `?` or `#` would name another
object (the rows of ``clip#1.mp4`` would point at ``clip``). Typed object-store URIs holding user
info or a `?` are refused before any work (`has_secrets`), so no secret reaches a stored key.

Error texts from libraries (requests, botocore, FFmpeg) quote the URIs they were given, and where
such a URI ends inside prose cannot be known, so free text is scrubbed conservatively (`scrub`):
every URI in it loses user info, query and fragment, object-store URIs included.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from posepipe.pipeline.io.uris import OBJECT_SCHEMES, object_authority, scheme_of

# scheme://[userinfo@]rest, where rest runs to whitespace or a quote/bracket that ends a URI in prose.
_URI_IN_TEXT = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^\s'\"<>()\[\]]*)")


def redact(uri: str) -> str:
    """`uri` without user info; a URL also without query and fragment; an object-store URI keeps
    its key verbatim; a plain path is returned unchanged."""
    scheme = scheme_of(uri)
    if not scheme:  # a path (or a Windows drive letter)
        return uri
    if scheme in OBJECT_SCHEMES and uri[len(scheme):].startswith("://"):
        authority = object_authority(uri)
        return f"{uri[:len(scheme)]}://{authority.rpartition('@')[2]}{uri[len(scheme) + 3 + len(authority):]}"
    return _redact_url(uri)


def _redact_url(uri: str) -> str:
    try:
        parts = urlsplit(uri)
    except ValueError:  # an unbalanced '[' in the host: keep the scheme only
        return f"{scheme_of(uri)}://"
    netloc = parts.netloc.rpartition("@")[2]   # the host as written (a bucket's or a placeholder's case kept)
    try:
        parts.port
    except ValueError:  # a malformed port: drop everything after the host's last ':'
        netloc = re.sub(r":[^:\]]*$", "", netloc)
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def has_secrets(uri: str) -> bool:
    """Whether a *typed* `uri` carries user info or a query string.

    For object stores a `?` counts: posepipe cannot tell a key's `?` from a pasted query string (a
    signed URL's parameters), so a typed object-store URI with one is refused; a key holding `?`
    is still read when its folder is the INPUT (listed keys never pass through here)."""
    scheme = scheme_of(uri)
    if not scheme:
        return False
    if scheme in OBJECT_SCHEMES:
        return "@" in object_authority(uri) or "?" in uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return True
    return "@" in parts.netloc or bool(parts.query)


def scrub(text: str) -> str:
    """Every URI inside free text without user info, query and fragment (object-store URIs too:
    inside prose, where a key ends is unknown, so the conservative cut is made)."""
    return _URI_IN_TEXT.sub(lambda m: _redact_url(m.group(1) + m.group(2)), text)


__all__ = ["has_secrets", "redact", "scrub"]
