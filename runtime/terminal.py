"""Text from records and files made safe to print. A control character in a node name, a label
or a line of an input file must not reach the operator's terminal: ESC sequences can rewrite
the screen or the title, CR hides what came before, C1 codes and bidi overrides garble it."""

from __future__ import annotations

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """`text` with every character that is not printable (C0 and C1 controls, DEL, line and
    paragraph separators, format characters such as bidi overrides) written as an escape like
    Python's (`\\x1b`, `\\u202e`); everything else, the space included, unchanged."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def excerpt(data: bytes | str, limit: int = 80) -> str:
    """At most `limit` characters of `data`, escaped as `printable` does (invalid UTF-8 as
    `\\xNN`), with `…` when cut: enough to recognise a bad line, never a whole file."""
    # cut before decoding (`limit` characters are at most 4 × limit bytes of UTF-8)
    head = data[: 4 * limit + 4]
    text = head.decode("utf-8", "backslashreplace") if isinstance(head, bytes) else head
    cut = len(text) > limit or len(head) < len(data)
    return printable(text[:limit]) + ("…" if cut else "")
