"""``python -m lamina``: the same entry point as the ``lamina`` console script."""

from lamina.cli.main import main

raise SystemExit(main())
