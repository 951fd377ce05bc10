"""The ``trackerd`` command: serve by default, or run a subcommand.

``trackerd [options]`` starts the server; ``trackerd analyze PATH...`` analyses files offline;
``trackerd health`` checks the installation.
Each subcommand owns its own argument parser (``trackerd analyze --help``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "analyze":
        from trackerd.analyze import main as analyze_main

        return analyze_main(args[1:])
    if args and args[0] == "health":
        from trackerd.health import main as health_main

        return health_main(args[1:])
    from trackerd.serve import main as serve_main

    return serve_main(args)
