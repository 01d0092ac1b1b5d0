"""The ``lamina`` command line: ``main.py`` builds the parser and maps errors to exit codes; each
command is one module (``images.py``, ``load.py``, ...) exposing ``register(subparsers)`` and
``run(args, store)``; ``common.py`` opens the store for them; ``output.py`` formats tables, sizes,
times and JSON."""
