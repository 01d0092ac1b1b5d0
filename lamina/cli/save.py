"""``lamina save [-o PATH] [--format docker|oci] IMAGE...``: write images to one archive: what
``docker save`` writes (``docker``, the default: an OCI layout plus ``manifest.json``, which
Docker and older tools load) or a plain OCI image layout (``oci``). The blobs are the bytes that
came in, so every digest stays valid. ``-o FILE`` writes a tar that appears only when complete;
``-o DIR/`` (or an existing empty directory) writes the layout unpacked. Without ``-o`` the tar
goes to stdout, which must not be a terminal."""

from __future__ import annotations

import argparse

from lamina.cli.common import binary_stdout, stdout_is_terminal

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("save", help="save images to a docker-save or OCI archive",
                       description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("-o", "--output", metavar="PATH", help="tar file, or directory (ending in /) for a layout")
    p.add_argument("--format", choices=["docker", "oci"], default="docker", help="archive format")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image name or ID")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    from graph.archive import save_archive
    from graph.errors import InvalidInput

    if args.output:
        save_archive(store, args.images, args.output, format=args.format)
        return 0
    if stdout_is_terminal():
        raise InvalidInput("refusing to write an archive to a terminal: use -o PATH or redirect stdout")
    for name in args.images:  # every name must resolve before a byte goes to the pipe
        store.resolve_image(name)
    out = binary_stdout()
    save_archive(store, args.images, out, format=args.format)
    out.flush()
    return 0
