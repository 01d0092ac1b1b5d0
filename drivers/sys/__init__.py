"""The one bottom layer: thin wrappers over Linux system calls that drivers, graph, runtime, bench
and tests share (the new mount API in ``mount``, durable writes in ``durable``). Nothing here knows
about layers or images."""
