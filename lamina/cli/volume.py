"""``lamina volume create|ls|inspect|rm|prune``: named and anonymous volumes, as ``docker
volume``. A volume is a directory in the store (``<root>/volumes/<name>/_data``) that
containers mount with ``-v NAME:/path`` or ``--mount type=volume``; it outlives its
containers. ``rm`` refuses a volume a container uses (exit 4); ``prune`` removes unused
anonymous volumes (``-a``: unused named ones too)."""

from __future__ import annotations

import argparse
import sys

from lamina.cli import output

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

    from graph import Store, Volume


def register(sub: Any) -> None:
    p = sub.add_parser("volume", help="manage volumes", description=(__doc__ or "").split("\n\n")[0])
    vs = p.add_subparsers(dest="volume_command", metavar="SUBCOMMAND", required=True)
    c = vs.add_parser("create", help="create a volume")
    c.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="set a label")
    c.add_argument("name", nargs="?", default=None, metavar="VOLUME", help="name (default: a random one)")
    c.set_defaults(run=run_create)
    ls = vs.add_parser("ls", aliases=["list"], help="list volumes")
    ls.add_argument("-q", "--quiet", action="store_true", help="names only")
    ls.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    ls.set_defaults(run=run_ls)
    i = vs.add_parser("inspect", help="show volumes as JSON")
    i.add_argument("names", nargs="+", metavar="VOLUME")
    i.set_defaults(run=run_inspect)
    r = vs.add_parser("rm", aliases=["remove"], help="remove volumes")
    r.add_argument("-f", "--force", action="store_true", help="no error for a missing volume")
    r.add_argument("names", nargs="+", metavar="VOLUME")
    r.set_defaults(run=run_rm)
    pr = vs.add_parser("prune", help="remove unused anonymous volumes")
    pr.add_argument("-a", "--all", action="store_true", help="unused named volumes too")
    pr.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    pr.set_defaults(run=run_prune)


def volume_json(store: "Store", v: "Volume") -> dict[str, Any]:
    """Docker's ``Volume`` object."""
    labels = dict(v.labels)
    if v.anonymous:
        labels.setdefault("com.docker.volume.anonymous", "")
    return {"CreatedAt": output.rfc3339(v.created), "Driver": v.driver, "Labels": labels or None,
            "Mountpoint": v.mountpoint, "Name": v.name, "Options": v.options or None, "Scope": "local"}


def run_create(args: argparse.Namespace, store: "Store") -> int:
    from graph.errors import InvalidInput

    labels = {}
    for item in args.label:
        k, _, val = item.partition("=")
        if not k:
            raise InvalidInput(f"invalid label {item!r}: want KEY=VALUE")
        labels[k] = val
    v, _new = store.volumes.create(args.name, labels=labels, anonymous=False)
    print(v.name)
    return 0


def run_ls(args: argparse.Namespace, store: "Store") -> int:
    vols = store.volumes.list()
    if args.quiet:
        for v in vols:
            print(v.name)
    elif args.format == "json":
        output.print_json([volume_json(store, v) for v in vols])
    else:
        output.table(("DRIVER", "VOLUME NAME"), ((v.driver, v.name) for v in vols))
    return 0


def run_inspect(args: argparse.Namespace, store: "Store") -> int:
    output.print_json([volume_json(store, store.volumes.get(n)) for n in args.names], indent=4)
    return 0


def run_rm(args: argparse.Namespace, store: "Store") -> int:
    for name in args.names:
        store.volumes.remove(name, force=args.force)
        print(name, flush=True)
    return 0


WARNING = """WARNING! This will remove anonymous local volumes not used by at least one container.
Are you sure you want to continue? [y/N] """
WARNING_ALL = """WARNING! This will remove all local volumes not used by at least one container.
Are you sure you want to continue? [y/N] """


def confirm(text: str, what: str) -> None:
    from graph.errors import LaminaError

    sys.stderr.write(text)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line.endswith("\n") or not sys.stdin.isatty():
        sys.stderr.write("\n")
    if line.strip().lower() not in ("y", "yes"):
        raise LaminaError(f"{what} has been cancelled")


def run_prune(args: argparse.Namespace, store: "Store") -> int:
    if not args.force:
        confirm(WARNING_ALL if args.all else WARNING, "volume prune")
    names, freed = store.volumes.prune(all_named=args.all)
    if names:
        print("Deleted Volumes:")
        for n in names:
            print(n)
        print()
    print(f"Total reclaimed space: {output.human_size(freed)}")
    return 0
