"""OCI layer tars on directory trees: applying one (``apply``, whiteouts and safety rules) and
producing one from a tree's changes (``diff``). Shared by every graphdriver."""
