"""What a person sees on the terminal: plain text, never markup, never a secret.

Video ids, file names and error texts come from the outside world. Printed through a console that
interprets markup, a folder named `q[/x]` or an error quoting `[/path]` ends the job with a
`MarkupError`; a file name holding escape sequences can rewrite the terminal. So every message
goes through `plain` (control characters shown escaped, URIs redacted) and out through a console
that interprets nothing; styling, where wanted, is applied to the whole message, never parsed from it.
"""
from __future__ import annotations

import re

from rich.console import Console
from rich.text import Text

from posepipe.pipeline.io.redaction import scrub

# C0 controls except tab and newline, DEL, C1 controls, and Unicode bidi overrides that reorder text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_AND_NEWLINES = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(text: object, *, newlines: bool = True) -> str:
    """`text` safe to show: URIs redacted, control characters escaped (\\x1b, \\u202e).

    `newlines=False` escapes line breaks too: for names (a video id with a newline in it must not
    print a line that looks like posepipe's own)."""
    pattern = _CONTROL if newlines else _CONTROL_AND_NEWLINES
    return pattern.sub(_escape, scrub(str(text)))


def console(*, stderr: bool = True) -> Console:
    """A rich console that interprets no markup, emoji codes or highlighting."""
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False)


def styled(text: object, style: str = "") -> Text:
    """`plain(text)` as a rich Text with one style for the whole message (no markup parsing)."""
    return Text(plain(text), style=style)


__all__ = ["console", "plain", "styled"]
