"""The redaction rule and plain terminal text, on the URIs and names a hostile pass used."""
from __future__ import annotations

from rich.console import Console

from posepipe.pipeline.io.redaction import has_secrets, redact, scrub
from posepipe.pipeline.run.terminal import plain, styled


def test_redact_drops_user_info_query_and_fragment():
    assert redact("https://user:pw@host:9000/a/b.mp4?X-Amz-Signature=abc#t=3") == "https://host:9000/a/b.mp4"
    assert redact("s3://AKIA:secret@bucket/key.mp4") == "s3://bucket/key.mp4"
    assert redact("http://h:notaport@x/y") == "http://x/y"  # malformed port: still nothing secret
    assert redact("/local/path?.mp4") == "/local/path?.mp4" and redact("C:/videos/a.mp4") == "C:/videos/a.mp4"
    assert has_secrets("s3://b/p?token=1") and has_secrets("s3://k:s@b/p") and not has_secrets("s3://b/p")


def test_scrub_finds_uris_inside_library_error_texts():
    text = ("403 Client Error: Forbidden for url: http://alice:hunter2@127.0.0.1:8/v.mp4?token=SECRET, "
            "(from 's3://AK:sk@bucket/x?sig=1')")
    clean = scrub(text)
    assert "hunter2" not in clean and "SECRET" not in clean and "sk@" not in clean and "sig=" not in clean
    assert "http://127.0.0.1:8/v.mp4" in clean and "s3://bucket/x" in clean


def test_plain_text_is_never_markup_or_terminal_control():
    shown = plain("\x1b[2J[/x] [bold]x\u202egnp.mp4")
    assert "\x1b" not in shown and "\u202e" not in shown and "\\x1b" in shown and "[/x]" in shown
    assert plain("a\nb") == "a\\nb"  # one message, one line: newlines are escaped by default
    console = Console(record=True, width=200)
    console.print(styled("failed q[/x]/a.mp4: [/tmp/a.mp4] broken", "red"))  # MarkupError before
    assert "q[/x]/a.mp4: [/tmp/a.mp4] broken" in console.export_text()
