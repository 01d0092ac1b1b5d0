"""lamina: the product's front. ``lamina.cli`` is the ``lamina`` command; the storage library it
drives is ``graph`` (``from graph import Store``), which embeds without any of this package.

Nothing is imported here: ``lamina --help`` must start fast, so every module is loaded only when a
command needs it.
"""

__version__ = "0.1.0"
