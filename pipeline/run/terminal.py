"""What a person sees on the terminal: plain text, one line per message, never markup, never a secret.

Video ids, file names, link targets, error texts and job logs come from the outside world. Shown as
they are, a name holding `ESC[2J` clears the screen, a newline in a reason prints a line that looks
like posepipe's own (`posepipe: 99 ok, 0 failed`), a bidi override shows `gnp.mp4` as `mp4.png`, and a
console that interprets markup ends the job on a folder named `q[/x]`. So:

* `plain` is the one function that makes text safe to show: URIs redacted, and every character that
  is not itself on screen written as an escape (`\\n`, `\\x1b`, `\\u202e`). A message is always one
  line; messages of our own that need several are given as several lines (`say("a", "b")`).
  `plain` is idempotent: its escapes are printable ASCII, so text passed through twice is unchanged.
* Everything posepipe prints goes through this module: `say` and `say_json` here, or a printing call
  whose argument is `plain(...)`/`styled(...)`; logging through `configure_logging`; click's own
  error messages through `plain_click_error` (jobs/cli.py). tests/pipeline/run/test_hostile_terminal.py
  checks the rule on the source of jobs/ and pipeline/.
* Commands printed for pasting (the query line, the rerun hint) are quoted by `shell_quote`: plain
  shell quoting, or bash's `$'...'` with byte escapes where an argument holds characters that may not
  reach the terminal raw; either way `plain` leaves them unchanged, and a shell reads them back exactly.
"""
from __future__ import annotations

import json
import logging
import shlex
import sys
import unicodedata
from typing import Any, Iterable

import click
from rich.console import Console
from rich.text import Text

from posepipe.pipeline.io.redaction import scrub

# Unicode categories never shown as themselves: Cc (C0, DEL, C1: ESC, BEL, \r, \n, \t, NEL U+0085),
# Cf (format: bidi embeddings, overrides, isolates and marks, zero-width space/joiners, word joiner,
# BOM, soft hyphen, invisible operators, tag characters, interlinear annotation), Zl and Zp (U+2028,
# U+2029: line and paragraph separators that some terminals and editors break lines at), Cs (lone
# surrogates: a file name's undecodable bytes, which a UTF-8 terminal cannot even be sent).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Letters that draw nothing (Default_Ignorable_Code_Point outside Cf): Hangul fillers, the combining
# grapheme joiner, Khmer inherent vowels, Mongolian free variation selectors. A name made of them
# looks empty or like another name.
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u3164\uffa0")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def hidden(ch: str) -> bool:
    """Whether the character `ch` is shown as an escape rather than as itself."""
    return ch in _INVISIBLE or unicodedata.category(ch) in _ESCAPED_CATEGORIES


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in _SHORT:
        return _SHORT[ch]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def plain(text: object, *, newlines: object = None) -> str:
    """`text` safe to show on one line: URIs redacted, hidden characters escaped (`\\n`, `\\x1b`, `\\u202e`).

    Line breaks are always escaped (`newlines` is accepted, and ignored, for older callers): a
    message of several lines is printed as several calls, each line its own."""
    text = scrub(str(text))
    if text.isascii() and text.isprintable():  # the common case: nothing to look at
        return text
    return "".join(_escape(ch) if hidden(ch) else ch for ch in text)


def styled(text: object, style: str = "") -> Text:
    """`plain(text)` as a rich Text with one style for the whole message (no markup parsing)."""
    return Text(plain(text), style=style)


def console(*, stderr: bool = True) -> Console:
    """A rich console that interprets no markup, emoji codes or highlighting."""
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False)


def say(*lines: object, err: bool = False, fg: str | None = None, bold: bool | None = None) -> None:
    """Print each of `lines` as one line (through `plain`), on stdout or (`err`) stderr, optionally coloured."""
    for line in lines:
        click.secho(plain(line), err=err, fg=fg, bold=bold)


def say_json(data: Any) -> None:
    """`data` as indented JSON on stdout. JSON escapes control characters itself; `ensure_ascii`
    escapes every non-ASCII character too (U+2028, bidi overrides), so no string can act on a terminal."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=True))


def shell_quote(arg: object) -> str:
    """`arg` as one shell word that reads back exactly and that `plain` leaves as it is.

    Printable text: `shlex.quote` (POSIX sh). Text with characters `plain` would escape (a newline,
    ESC, a bidi override, undecodable bytes): bash/zsh/ksh ANSI-C quoting, `$'...'`, with each such
    character's UTF-8 bytes as `\\xHH` (locale-independent; undecodable bytes kept as themselves)."""
    text = str(arg)
    if not any(hidden(ch) for ch in text):
        return shlex.quote(text)
    out = []
    for ch in text:
        if ch in ("\\", "'"):
            out.append("\\" + ch)
        elif hidden(ch):
            out.append("".join(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape")))
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"


def shell_join(argv: Iterable[object]) -> str:
    """A command line of `argv`, each word through `shell_quote`."""
    return " ".join(shell_quote(a) for a in argv)


def plain_click_error(exc: click.ClickException) -> click.ClickException:
    """`exc` with its message shown through `plain` (click prints option values and file names the
    user gave, and our messages quote names from outside)."""
    original = exc.format_message
    exc.format_message = lambda: plain(original())  # type: ignore[method-assign]
    return exc


class _PlainFormatter(logging.Formatter):
    """Log records as plain lines: the message through `plain`, a traceback's lines each through it;
    then laid out by `inner` (default `LEVEL message`), so another library's layout is kept."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter("%(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        saved = record.msg, record.args, record.exc_info, record.exc_text
        try:
            record.msg, record.args = plain(record.getMessage()), None
            if record.exc_info and not record.exc_text:
                record.exc_text = self.inner.formatException(record.exc_info)
            record.exc_info = None
            if record.exc_text:
                # split("\n"), not splitlines(): that also splits at U+2028, \x1c-\x1e, \x85, and
                # a name holding one would start a line of its own.
                record.exc_text = "\n".join(plain(line) for line in record.exc_text.split("\n"))
            return self.inner.format(record)
        finally:
            record.msg, record.args, record.exc_info, record.exc_text = saved


class _StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is when a record arrives (click's test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def configure_logging(level: int = logging.WARNING) -> None:
    """Log records of `level` and above to stderr as plain lines (`LEVEL message`), and Python's
    warnings with them. Called by the `posepipe` command group (every command) and by `run -v`."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(_PlainFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    # urllib3 logs each retry with the request's path and query but not its host, so a pre-signed
    # URL's signature would pass `plain`'s URI redaction: its retries are not worth a warning line.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def plain_log_handlers(name: str) -> None:
    """The handlers a library set on its own logger `name` (Ray's print to the terminal themselves)
    show its records through `plain` too, in the library's own layout."""
    for handler in logging.getLogger(name).handlers:
        if not isinstance(handler.formatter, _PlainFormatter):
            handler.setFormatter(_PlainFormatter(handler.formatter))


def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    """An unexpected error's traceback, each line through `plain` (the exception's text may quote a name)."""
    import traceback

    for line in "".join(traceback.format_exception(kind, value, tb)).rstrip("\n").split("\n"):  # not splitlines()
        sys.stderr.write(plain(line) + "\n")


__all__ = ["configure_logging", "console", "excepthook", "hidden", "plain", "plain_click_error", "plain_log_handlers",
           "say", "say_json", "shell_join", "shell_quote", "styled"]
