"""Matplotlib figures captured as PNG without `savefig`, as a notebook shows them.

Also a matplotlib back end (`module://local_code_interpreter.sandbox.figures`): Agg for drawing, and a `show()`
that renders the open figures at once and closes them, like a notebook's inline back end, so
`plt.show()` neither warns ("non-interactive") nor loses a figure the code closes afterwards.
Only the confined child imports this module (through `child.prepare()`, or the first cell that uses pyplot).
"""

from __future__ import annotations

import io
import sys

from matplotlib._pylab_helpers import Gcf
from matplotlib.backends.backend_agg import FigureCanvasAgg

BACKEND = "module://local_code_interpreter.sandbox.figures"
MAX_IMAGES = 16  # per execution; the rest are closed unrendered, with a note on stderr
MAX_IMAGE_BYTES = 8 * 1024 * 1024  # in all, per execution

FigureCanvas = FigureCanvasAgg  # what matplotlib's back-end loader looks for
_shown: list[bytes] = []  # rendered by show() during the current execution
_skipped = 0


def show(*args, **kwargs) -> None:  # noqa: ARG001 - pyplot passes block=...
    """`plt.show()`: render every open figure now and close it (a notebook shows it at this point)."""
    _render_open_figures()


def _render_open_figures() -> None:
    global _skipped
    for manager in list(Gcf.get_all_fig_managers()):
        figure = manager.canvas.figure
        try:
            if len(_shown) >= MAX_IMAGES or sum(map(len, _shown)) >= MAX_IMAGE_BYTES:
                _skipped += 1
                continue
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", bbox_inches="tight")
            data = buffer.getvalue()
            if sum(map(len, _shown)) + len(data) > MAX_IMAGE_BYTES:
                _skipped += 1
                continue
            _shown.append(data)
        except Exception as error:  # a figure that cannot be drawn must not cost the others
            print(f"[figure {manager.num} could not be rendered: {type(error).__name__}: {error}]", file=sys.stderr)
        finally:
            Gcf.destroy(manager)


def collect() -> list[bytes]:
    """PNG bytes of the figures this execution showed or left open (then closed), in order; resets."""
    global _skipped
    if Gcf.figs:
        _render_open_figures()
    images, _shown[:] = list(_shown), []
    if _skipped:
        print(f"[{_skipped} more figure(s) not captured: at most {MAX_IMAGES} images and "
              f"{MAX_IMAGE_BYTES // (1024 * 1024)} MiB per execution]", file=sys.stderr)
        _skipped = 0
    return images
