"""Code output shown on a terminal: control sequences are made visible instead of being obeyed.

A program's output can hold escape sequences that set the window title (OSC 0/2), write the clipboard (OSC 52),
clear the screen or move the cursor (CSI), ring the bell, or hide text behind carriage returns and bidi
overrides. Printed raw to a TTY, the code would act on the user's terminal; escaped, it is only text.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls (CSI 0x9b and OSC 0x9d among them), a carriage return not
# ending a line, and the bidi embedding/override/isolate characters.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]|\r(?!\n)")


def _visible(match: re.Match) -> str:
    char = match.group()
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escape_controls(text: str) -> str:
    """`text` with every terminal control character shown as a `\\xNN` / `\\uNNNN` escape."""
    return _CONTROL.sub(_visible, text)
