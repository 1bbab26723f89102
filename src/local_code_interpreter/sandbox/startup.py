"""Which template a new child is forked from: the warm one, or the lean one, chosen by the code it will run first.

The warm template holds NumPy, pandas and matplotlib (`child.LIBRARY_WARM_MODULES`: about 70 MiB of heap and
several hundred mappings). Every child forked from it pays for them whether it uses them or not: the fork copies
the mappings, its first cell copies on write the pages it touches, its exit unmaps them all. Measured here with
`perf` over a thousand new conversations of `print(i*3)`: about 6 ms of CPU per child, a third of it in fork, a
third in copy-on-write faults (about 1,000 a child). The lean template warms the standard library only: a child
of it costs about half that, but a library it imports later is imported then (NumPy, pandas and pyplot: about
0.5 s here, once per session, as a Jupyter kernel pays on its first import).

So a child's first cell decides: one that imports nothing outside the standard library starts lean; one that
imports anything else (or imports by name at run time: `__import__`, `importlib`), or that is not Python as it
stands (a notebook line such as `%matplotlib inline`), starts warm, and so does a session opened without code
(an upload first: a file to analyse). Either way the code runs the same, with the same limits: the choice moves
only where the time goes. What counts as the standard library is `sys.stdlib_module_names`.
"""

from __future__ import annotations

import ast
import sys

_DYNAMIC = frozenset({"__import__", "import_module", "importlib"})


def needs_libraries(code: str | None) -> bool:
    """True when `code` (the first cell; None when unknown) should start in a child of the warm template."""
    if code is None:
        return True
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):  # a notebook line, or NUL: the child explains; start as before
        return True
    if code.isascii() and "import" not in code:
        # Nothing to find: every import and every name in `_DYNAMIC` spells "import", and ASCII source cannot
        # reach it through the NFKC normalization of identifiers. Most first cells; the walk would double the cost.
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(_outside_stdlib(alias.name) for alias in node.names):
                return True
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and _outside_stdlib(node.module or ""):
                return True
        elif isinstance(node, ast.Name) and node.id in _DYNAMIC:
            return True
        elif isinstance(node, ast.Attribute) and node.attr in _DYNAMIC:
            return True
    return False


def _outside_stdlib(module: str) -> bool:
    return module.partition(".")[0] not in sys.stdlib_module_names
