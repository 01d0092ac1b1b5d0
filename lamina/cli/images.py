"""``lamina images [-a] [-q] [-f dangling=true|false] [--format json]``: list images, one row per
tag, like ``docker images``.

An image with several tags has several rows; one known only by digest shows ``<none>`` as its tag;
one with no reference at all (a *dangling* image: a commit without a name, an unnamed load, an
image kept after ``rmi -f``) shows ``<none> <none>``; it stays until ``rmi <id>`` or
``image prune``. ``-f dangling=true`` lists only those, ``dangling=false`` only the others. Rows
are newest first. ``-a`` is accepted for Docker's sake: lamina has no intermediate build images,
so it lists the same images.
"""

from __future__ import annotations

import argparse

from lamina.cli import output

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store

HEADERS = ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")


def register(sub: Any) -> None:
    p = sub.add_parser("images", help="list images", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("-a", "--all", action="store_true", help="show all images (as Docker's -a)")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    p.add_argument("--no-trunc", action="store_true", help="show full image IDs")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="dangling=true|false",
                   help="filter output (only dangling= is supported)")
    p.set_defaults(run=run, recovers=False)  # reads rows only: no recovery, no driver (graph.Store)


def _dangling_filter(filters: list[str]) -> bool | None:
    """True/False for ``dangling=true|false`` (the last one wins, as Docker), None for none."""
    from graph.errors import InvalidInput

    want: bool | None = None
    for f in filters:
        key, _, value = f.partition("=")
        if key != "dangling":
            raise InvalidInput(f"invalid filter {key!r} (supported: dangling=true|false)")
        if value.lower() not in ("true", "false", "1", "0"):
            raise InvalidInput(f"invalid filter 'dangling={value}': use true or false")
        want = value.lower() in ("true", "1")
    return want


def rows(store: "Store") -> list[dict[str, Any]]:
    """One dict per (image, reference) with stable keys; the JSON output is exactly these."""
    out: list[dict[str, Any]] = []
    for img in store.images.list():
        created = output.parse_time(store.images.created_text(img.id))  # no full config parse
        size = sum(layer.size for layer in store.layers.stack(img.top_layer))
        refs = store.refs.list(img.id)
        tagged = [r.reference for r in refs if r.reference.tag is not None]
        digested = [r.reference for r in refs if r.reference.tag is None and r.reference.digest is not None]
        entries: list[tuple[str, str, str | None]] = [
            (ref.familiar_name(), ref.tag or "<none>", str(ref.digest) if ref.digest else None) for ref in tagged
        ]
        tagged_names = {ref.familiar_name() for ref in tagged}
        entries += [
            (ref.familiar_name(), "<none>", str(ref.digest))
            for ref in digested
            if ref.familiar_name() not in tagged_names
        ]
        if not entries:
            entries = [("<none>", "<none>", None)]
        for repo, tag, digest in entries:
            out.append(
                {
                    "ID": str(img.id),
                    "Repository": repo,
                    "Tag": tag,
                    "Digest": digest,
                    "Created": output.rfc3339(created if created is not None else img.created),
                    "Size": size,
                    "_created": created if created is not None else img.created,
                }
            )
    return out


def run(args: argparse.Namespace, store: "Store") -> int:
    listing = rows(store)
    dangling = _dangling_filter(args.filter)
    if dangling is not None:
        ids = set(map(str, store.dangling()))
        listing = [r for r in listing if (r["ID"] in ids) == dangling]
    if args.quiet:
        output.print_ids((r["ID"] for r in listing), args.no_trunc)
        return 0
    if args.format == "json":
        output.print_rows_json(listing)
        return 0
    output.table(
        HEADERS,
        (
            (
                r["Repository"],
                r["Tag"],
                r["ID"] if args.no_trunc else output.short_id(r["ID"]),
                output.ago(r["_created"]),
                output.human_size(r["Size"]),
            )
            for r in listing
        ),
    )
    return 0
