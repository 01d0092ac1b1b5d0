"""Talking to registries, as Docker's distribution package does: the HTTP client (``registry``),
credentials and token challenges (``auth``), ``pull`` and ``push`` over the store, and the
progress events they emit (``progress``). Users reach these through ``graph.pull``/``graph.push``."""
