"""``python -m runtime.cleanup ROOT CONTAINER_ID``: record a container's exit in the store
(what an attached caller does itself). A detached container's monitor replaces itself with this
once the container has exited: a fresh interpreter, so nothing of the forked caller's state
(its database connection, say) is used after the fork."""

from __future__ import annotations

import sys


def cleanup(store_root: str, container_id: str) -> int:
    """Reconcile one container: exit recorded, rootfs unmounted, removed if ``--rm``."""
    from graph import Store
    from graph import NotFound
    from runtime.reconcile import reconcile

    with Store(store_root) as store:
        try:
            c = store.containers.get(container_id)
        except NotFound:
            return 0
        reconcile(store, c)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2:
        return cleanup(argv[0], argv[1])
    print("usage: python -m runtime.cleanup ROOT CONTAINER_ID", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
