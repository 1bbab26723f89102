"""`python -m local_code_interpreter` and the `local-code-interpreter` console script."""

import sys

from .cli import main as _main


def main() -> None:
    sys.exit(_main())


if __name__ == "__main__":
    main()
