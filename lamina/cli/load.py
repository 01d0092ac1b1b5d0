"""``lamina load -i PATH [--platform OS/ARCH]``: load images from a ``docker save`` tar, or an
OCI image layout (a directory or a tar of one). Prints ``Loaded image: NAME`` per name it set, or
``Loaded image ID: ID`` for an image the archive gives no name, as ``docker load`` does.

All or nothing per archive: the library verifies every blob against its digest before an image
or name becomes visible, and an interrupted load leaves nothing a later open does not remove.
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("load", help="load images from a docker-save tar or an OCI layout",
                       description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("-i", "--input", required=True, metavar="PATH",
                   help="archive: docker-save tar, OCI layout directory or tar")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="pick this platform from a multi-platform index (default: this machine's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    from graph.archive import load_archive
    from graph.errors import NotFound
    from graph.oci.formats import Platform

    platform = Platform.parse(args.platform) if args.platform else None
    path = args.input
    if not os.path.lexists(path):
        raise NotFound(f"no such file or directory: {path}")
    loaded = load_archive(store, path, platform=platform)
    for image in loaded:
        for warning in image.warnings:  # the load succeeded; these say what was left out
            print(f"lamina: warning: {' '.join(warning.split())}", file=sys.stderr)
    if args.quiet:
        return 0
    for image in loaded:
        names = [r.familiar() for r in image.refs]
        if names:
            for name in names:
                print(f"Loaded image: {name}")
        else:
            print(f"Loaded image ID: {image.image_id}")
    return 0
