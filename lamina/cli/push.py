"""``lamina push [--insecure] [-q] REF``: upload an image to the registry its name says.

Output follows ``docker push``: ``The push refers to repository [REPO]``, one line per blob
(Pushing / Pushed / Layer already exists / Mounted from OTHER), then ``TAG: digest: DIGEST
size: N``. Only blobs the registry lacks are sent (HEAD first; a cross-repository mount when
another repository on the same registry is known to hold the blob); the manifest goes last, as
stored, so a pulled image keeps its digest. ``-q`` prints only the manifest digest.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graph import Store


def register(sub: Any) -> None:
    p = sub.add_parser("push", help="push an image to a registry", description=__doc__.split("\n\n")[0])
    p.add_argument("--insecure", action="store_true", help="plain HTTP to the registry in REF (no TLS)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the manifest digest")
    p.add_argument("--concurrency", type=int, default=3, metavar="N", help="blobs uploaded at once (default 3)")
    p.add_argument("ref", metavar="REF", help="image reference, e.g. 127.0.0.1:5000/app:1.0")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, store: "Store") -> int:
    from graph.distribution.push import push
    from graph.oci.reference import parse_reference
    from lamina.cli.pull import PUSH_WORDS, ProgressView, registry_options

    ref = parse_reference(args.ref)
    options = registry_options(insecure_host=ref.domain if args.insecure else None)
    view = None
    if not args.quiet:
        print(f"The push refers to repository [{ref.name}]", flush=True)
        view = ProgressView(sys.stdout, PUSH_WORDS)
    try:
        result = push(store, ref, options=options, concurrency=args.concurrency,
                      progress_fn=view.event if view else None)
    finally:
        if view is not None:
            view.close()
    if args.quiet:
        print(result.digest)
        return 0
    label = ref.tag if ref.tag is not None else "digest"
    print(f"{label}: digest: {result.digest} size: {result.size}")
    return 0
