"""What a URI names, parsed once: a local path, an object (scheme, bucket, key) or a URL.

**A key is a key.** Object stores name an object by the pair (bucket, key), and a key may hold any
character: `#`, `?`, `%`, `+`, spaces, `//`, NFC and NFD spellings of one word. posepipe writes and
reads object URIs in the form the AWS CLI uses, ``s3://BUCKET/KEY`` with the key *verbatim*: no
percent-decoding, no query, no fragment. `split_object_uri` is the only parser of that form and
`object_uri` its only builder; a URL parser (`urllib.parse`) never sees one, because it would cut
the key at `#` or `?` (a listed ``clip#1.mp4`` was read from the object ``clip``) and decode `%`.

**http(s) is a URL.** Its query is part of it (sent: signed URLs need it; never stored or shown:
`redaction`), its fragment is not (a client never sends one, so it is dropped where the URL is
taken in). A name in a URL's path is percent-encoded: write ``%23`` for a `#` in a file name.

**file:// is a URL too** (RFC 8089): its path is percent-decoded once, where it is taken in, into a
plain absolute path; a `?` or `#` in it is refused (write ``%3F``/``%23``, or give the plain path).
Plain local paths are made absolute once, at the edge (`sources.scan_inputs`), so a stored path
names the same file from any working directory.
"""
from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

OBJECT_SCHEMES = ("s3", "gs", "az")
REMOTE_SCHEMES = ("s3", "gs", "az", "http", "https")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


class URIError(ValueError):
    """A URI that cannot name what posepipe needs (no bucket, a query in a file:// URI, ...)."""


def scheme_of(uri: str) -> str:
    """The URI's scheme in lower case, or '' for a local path ('C:' drive letters are not schemes)."""
    found = _SCHEME.match(uri)
    return found.group(1).lower() if found and len(found.group(1)) > 1 else ""


def is_remote(uri: str) -> bool:
    return scheme_of(uri) in REMOTE_SCHEMES


def is_object_uri(uri: str) -> bool:
    return scheme_of(uri) in OBJECT_SCHEMES


def split_object_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of ``scheme://[USERINFO@]BUCKET/KEY``: the key is everything after the bucket's
    '/', verbatim. Credentials, if any, are dropped here (callers refuse them before: `has_secrets`)."""
    scheme = scheme_of(uri)
    if scheme not in OBJECT_SCHEMES:
        raise URIError(f"{uri!r} is not an s3://, gs:// or az:// URI")
    rest = uri[len(scheme) + 1:]
    if not rest.startswith("//"):
        raise URIError(f"write {scheme}://BUCKET/KEY (with two slashes)")
    authority, _, key = rest[2:].partition("/")
    return authority.rpartition("@")[2], key


def object_authority(uri: str) -> str:
    """The part between ``scheme://`` and the key: the bucket, with any user info still in it."""
    scheme = scheme_of(uri)
    return uri[len(scheme) + 3:].partition("/")[0]


def object_uri(scheme: str, bucket: str, key: str) -> str:
    """The one spelling of an object: ``scheme://bucket/key`` (the key as it is, no encoding)."""
    return f"{scheme}://{bucket}/{key}"


def file_uri_path(uri: str) -> str:
    """The local path a file:// URI names (percent-decoded once). Raises URIError for a query or a
    fragment: in a URL they are not part of the path, and dropping them would name another file."""
    parts = urlsplit(uri)
    if parts.query or parts.fragment or "?" in uri or "#" in uri:
        raise URIError(f"{uri!r}: a '?' or '#' in a file:// URI ends its path; write them as %3F and %23, "
                       "or give the plain path")
    if parts.netloc not in ("", "localhost"):
        raise URIError(f"{uri!r} names a file on the host {parts.netloc!r}; give a local path")
    return unquote(parts.path)


def local_path(uri: str) -> str:
    """A plain path as it is; a file:// URI's path (see `file_uri_path`)."""
    return file_uri_path(uri) if scheme_of(uri) == "file" else uri


def without_fragment(url: str) -> str:
    """An http(s) URL as a client sends it: everything before '#'."""
    return url.partition("#")[0]


__all__ = ["OBJECT_SCHEMES", "REMOTE_SCHEMES", "URIError", "file_uri_path", "is_object_uri", "is_remote",
           "local_path", "object_authority", "object_uri", "scheme_of", "split_object_uri", "without_fragment"]
