"""``python -m trackerd`` is the same as the ``trackerd`` command."""

from trackerd.cli import main

raise SystemExit(main())
