"""Which template a new child is forked from (`sandbox/startup.py`), and that a child of either runs the same code
with the same limits: the choice moves where the time goes, never what the code can do."""

from __future__ import annotations

import asyncio

import pytest

from local_code_interpreter.sandbox import Limits
from local_code_interpreter.sandbox.startup import needs_libraries


@pytest.mark.parametrize("code", [
    "print(6 * 7)",
    "import json, math\nprint(json.dumps(math.pi))",
    "from collections import Counter\nfrom os import path",
    "import xml.etree.ElementTree as ET",
    "def f():\n    import statistics\n    return statistics.mean([1, 2])",
    "from . import nothing",  # relative: fails in a cell either way
    "",
])
def test_a_first_cell_of_the_standard_library_only_starts_lean(code):
    assert not needs_libraries(code)


@pytest.mark.parametrize("code", [
    None,  # unknown (a session opened by an upload): a file to analyse
    "import numpy as np",
    "import json, pandas",
    "from matplotlib import pyplot as plt",
    "def plot():\n    import matplotlib.pyplot as plt",
    "import mymodule  # an uploaded file",
    "np = __import__('numpy')",
    "np = __\uff49\uff4d\uff50\uff4f\uff52\uff54__('numpy')",  # fullwidth letters: NFKC makes it __import__
    "import importlib\nimportlib.import_module('pandas')",
    "%matplotlib inline\nimport math",  # a notebook line: not Python as it stands
    "print(",
    "x = '\0'",
])
def test_a_first_cell_that_may_import_a_library_or_is_unknown_starts_warm(code):
    assert needs_libraries(code)


LIMITS = Limits(timeout_seconds=60, memory_mb=512)
# After NumPy, pandas and pyplot, 400 MiB of address space (reserved, untouched: no memory quota is at stake). A
# lean template's own address space is about 200 MiB smaller than the warm one's: its children's limit is the warm
# one's, else this fails in a lean child and not in a warm one.
LIBRARIES = ("import numpy, pandas, matplotlib.pyplot as plt\n"
             "reserved = numpy.empty(400 * 2**20, dtype=numpy.uint8)\n"
             "plt.plot([1, 3, 2])\n"
             "print(len(reserved), pandas.Series([1, 2]).sum())")


@pytest.mark.parametrize("first_cell, template", [("x = 1", "lean"), ("import numpy\nx = 1", "warm"),
                                                  (None, "warm")])
def test_a_session_starts_from_the_template_its_first_cell_needs_and_can_do_everything_from_either(
        first_cell, template):
    from local_code_interpreter.sandbox.process import Backend

    async def scenario():
        backend = Backend(LIMITS, spares=1, session_spares=1)
        try:
            session = await backend.open_session(first_cell=first_cell)
            forked_by = "lean" if session.child.supervisor is backend.lean else "warm"
            first = await session.run(first_cell or "x = 1")
            later = await session.run(LIBRARIES)
            kept = await session.run("x")
            await session.close()
            one_shot = await backend.run(first_cell or "x = 1")
            return forked_by, first, later, kept, one_shot
        finally:
            await backend.close()

    forked_by, first, later, kept, one_shot = asyncio.run(scenario())
    assert forked_by == template
    assert first.exit_code == 0 and one_shot.exit_code == 0, (first, one_shot)
    assert later.exit_code == 0 and later.stdout == f"{400 * 2**20} 3\n", later.stderr[-1500:]
    assert len(later.images) == 1 and later.images[0].media_type == "image/png"  # the chart, without savefig
    assert later.files == [] and later.stderr == "", (later.files, later.stderr)  # no cache rebuilt, no fc-list
    assert kept.value == "1"


ENVIRONMENT = ("import json, os, subprocess\n"
               "seen = subprocess.run(['env'], capture_output=True, text=True).stdout.splitlines()\n"
               "print(json.dumps([dict(os.environ), dict(line.split('=', 1) for line in seen), os.getcwd()]))")


@pytest.mark.parametrize("first_cell, template", [(ENVIRONMENT, "lean"), ("import numpy\n" + ENVIRONMENT, "warm")])
def test_a_child_of_either_template_sees_only_the_sandbox_environment_and_its_own_home(first_cell, template):
    """The template fixes its environment once (`isolation.fix_environment`); each child sets only HOME and TMPDIR.
    What Python sees and what a program the code starts sees are the same, and nothing of the template's own
    (GLIBC_TUNABLES, PYTHONMALLOC, MPLCONFIGDIR) is in either."""
    import json

    from local_code_interpreter.sandbox.child import BLAS_THREAD_ENV
    from local_code_interpreter.sandbox.isolation import SANDBOX_ENV
    from local_code_interpreter.sandbox.process import Backend

    async def scenario():
        backend = Backend(LIMITS, spares=1, session_spares=1)
        try:
            results = []
            for _ in range(2):  # two children of the same template: each has its own home
                session = await backend.open_session(first_cell=first_cell)
                assert session.child.supervisor is (backend.lean if template == "lean" else backend.supervisor)
                results.append(await session.run(first_cell))
                await session.close()
            return results
        finally:
            await backend.close()

    homes = set()
    for result in asyncio.run(scenario()):
        assert result.exit_code == 0, result.stderr[-1500:]
        python, program, home = json.loads(result.stdout)
        expected = {**SANDBOX_ENV, **(BLAS_THREAD_ENV if template == "lean" else {}), "HOME": home, "TMPDIR": home}
        assert python == expected and program == expected, (python, program)
        homes.add(home)
    assert len(homes) == 2


def test_a_lean_sessions_listing_leaves_out_matplotlibs_font_cache_but_not_the_codes_own_files():
    """A lean child writes the font cache into `.matplotlib/` when its code first imports matplotlib: set-up,
    so the session's listing leaves it out (it is still readable by name); what the code writes there is listed."""
    from local_code_interpreter.sandbox.process import Backend

    async def scenario():
        backend = Backend(LIMITS, spares=1, session_spares=1)
        try:
            session = await backend.open_session(first_cell="x = 1")
            assert session.child.supervisor is backend.lean
            chart = await session.run("import os, matplotlib.pyplot as plt\nplt.plot([1, 2])\n"
                                      "open('.matplotlib/notes.txt', 'w').write('mine')\n"
                                      "print(sorted(os.listdir('.matplotlib')))")
            listing = [info.name for info in await session.files()]
            cache = [name for name in eval(chart.stdout) if name.startswith("fontlist-")]
            readable = await session.read(f".matplotlib/{cache[0]}") if cache else b""
            await session.close()
            return chart, listing, cache, readable
        finally:
            await backend.close()

    chart, listing, cache, readable = asyncio.run(scenario())
    assert chart.exit_code == 0 and len(chart.images) == 1, chart.stderr[-1500:]
    assert cache and readable.startswith(b"{"), (cache, readable[:100])  # the cache is there, and readable
    assert listing == [".matplotlib/notes.txt"], listing
