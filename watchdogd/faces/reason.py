"""The maintenance ``--reason`` rule, shared by ``watchdogctl`` (refuses before sending) and the control socket
(refuses what another client sends): in a module of its own so that the daemon does not load the CLI for it."""

from __future__ import annotations

import unicodedata

MAX_REASON = 200
"""Characters of a maintenance ``--reason`` at most: one line in status, logs and pages, not a document."""
_NOT_TEXT = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Unicode categories a reason may not hold: controls (newlines, ESC: a forged log line or terminal escape),
invisible formatting (bidi overrides that make a reason read other than it is), lone surrogates, line breaks."""


def reason_problem(text: str) -> str | None:
    """What is wrong with ``text`` as a maintenance reason (``pause --all --reason``), or None.

    The reason goes into status, the daemon log, audit rows and pages, read
    on terminals: one line of plain text, bounded.
    """
    if not text.strip():
        return "is empty"
    if len(text) > MAX_REASON:
        return f"is {len(text)} characters long; at most {MAX_REASON}"
    bad = next((char for char in text if unicodedata.category(char) in _NOT_TEXT), None)
    if bad is not None:
        return f"contains the control character U+{ord(bad):04X}; give one line of plain text"
    return None
