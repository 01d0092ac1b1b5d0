"""lamina's runtime: containers from OCI bundles on crun (default) or runc.

``graph`` keeps a container's record and read-write layer; this package runs it. A container's
directory ``<root>/containers/<id>/`` holds its bundle (``config.json``, built by
``runtime.bundle`` from the record, with the user resolved by ``runtime.users``), its state, its
log (``runtime.logs``, Docker's json-file format) and the files of its monitor
(``runtime.monitor``: one small process per running container that survives the CLI, like
conmon). ``runtime.oci`` drives the runtime binary, ``runtime.cgroups`` reads limits and usage,
``runtime.containers`` is the state machine and what the CLI calls::

    from graph import Store
    import runtime

    with Store(root) as store:
        r = runtime.run(store, "busybox", config={"Cmd": ["echo", "hi"]}, attach=True)
        code = runtime.wait(store, r, sys.stdout.buffer, sys.stderr.buffer)

Module ``runtime.containers`` functions take the store first and a container name, ID or ID
prefix. Nothing here is imported by ``graph``.
"""

from runtime.cgroups import Stats
from runtime.containers import (
    Running,
    State,
    create,
    describe,
    exec_,
    extra_inspect,
    inspect_state,
    kill,
    log_entries,
    pause,
    reconcile,
    reconcile_all,
    remove,
    run,
    start,
    stats,
    stop,
    sweep_runtime_state,
    unpause,
    wait,
)
from runtime.logs import Entry
from runtime.oci import DEFAULT_RUNTIME, RUNTIMES, OCIRuntime, open_runtime, signal_number

__all__ = [
    "DEFAULT_RUNTIME",
    "RUNTIMES",
    "Entry",
    "OCIRuntime",
    "Running",
    "State",
    "Stats",
    "create",
    "describe",
    "exec_",
    "extra_inspect",
    "inspect_state",
    "kill",
    "log_entries",
    "open_runtime",
    "pause",
    "reconcile",
    "reconcile_all",
    "remove",
    "run",
    "signal_number",
    "start",
    "stats",
    "stop",
    "sweep_runtime_state",
    "unpause",
    "wait",
]
