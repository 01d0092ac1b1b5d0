"""lamina's runtime: containers from OCI bundles on crun (default) or runc.

``graph`` keeps a container's record and read-write layer; this package runs it. A container's
directory ``<root>/containers/<id>/`` (``runtime.paths``) holds its bundle (``config.json``,
built by ``runtime.bundle`` and written by ``runtime.prepare``, with the user resolved by
``runtime.users``), its state (``runtime.state``), its log (``runtime.logs``, Docker's json-file
format) and the files of its monitor (``runtime.monitor``: one small process per running
container that survives the CLI, like conmon; ``runtime.attach`` is the caller's end of it,
``runtime.frames`` the wire between them, ``runtime.cleanup`` what it becomes to record an exit).
``runtime.oci`` drives the runtime binary, ``runtime.cgroups`` reads limits and usage.

What the CLI calls: ``runtime.lifecycle`` (create, start, run, wait, kill, stop, pause, unpause,
remove), ``runtime.exec``, ``runtime.inspection`` (state, inspect fields, stats, logs) and
``runtime.reconcile`` (repairing whatever a crash left)::

    from graph import Store
    import runtime

    with Store(root) as store:
        r = runtime.run(store, "busybox", config={"Cmd": ["echo", "hi"]}, attach=True)
        code = runtime.wait(store, r, sys.stdout.buffer, sys.stderr.buffer)

These functions take the store first and a container name, ID or ID prefix. Nothing here is
imported by ``graph``.
"""

from runtime.cgroups import Stats
from runtime.exec import exec_
from runtime.inspection import describe, extra_inspect, inspect_state, log_entries, stats
from runtime.lifecycle import Running, create, kill, pause, remove, run, start, stop, unpause, wait
from runtime.logs import Entry
from runtime.oci import DEFAULT_RUNTIME, RUNTIMES, OCIRuntime, open_runtime, signal_number
from runtime.paths import paths_of
from runtime.reconcile import list_reconciled, reconcile, reconcile_all, sweep_runtime_state
from runtime.state import State, read_state

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
    "paths_of",
    "pause",
    "read_state",
    "reconcile",
    "reconcile_all",
    "list_reconciled",
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
