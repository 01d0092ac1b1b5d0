"""``docker run`` / ``docker create`` flags lamina adds for issue 17 (volumes, terminals,
restart policies, security), mapped onto Docker's record the way the docker CLI maps them
(``cli/command/container/opts.go``): ``-v`` to ``HostConfig.Binds`` (or ``Config.Volumes`` for
``-v /path``), ``--mount`` to ``HostConfig.Mounts`` objects, ``--tmpfs`` to ``HostConfig.Tmpfs``.
The record is then validated by ``runtime.spec`` (which the Engine API daemon uses on the
``HostConfig`` it receives), so the CLI and the daemon accept and refuse the same things.

``add_options`` is one block of the parser of ``create`` and ``run`` (kept apart from the other
options so that helpers adding options elsewhere merge cleanly); ``apply`` writes the parsed
flags into a record made by ``lamina.containerconfig``.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any


def add_options(p: argparse.ArgumentParser, *, terminal: bool = True) -> None:
    """The flags of this module (``create`` and ``run``; ``terminal``: add ``-i`` and ``-t``,
    which ``run`` defines with its own options)."""
    if terminal:
        p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open (record OpenStdin)")
        p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    p.add_argument("--restart", default="no", metavar="POLICY",
                   help="restart policy: no, on-failure[:N], always, unless-stopped")
    g = p.add_argument_group("volumes")
    g.add_argument("-v", "--volume", action="append", default=[], metavar="[SRC:]DST[:MODE]",
                   help="bind mount a host path (created if missing) or mount a named volume; DST alone: "
                        "an anonymous volume; MODE ro, rw, nocopy, a propagation")
    g.add_argument("--mount", action="append", default=[], metavar="type=bind|volume|tmpfs,...",
                   help="mount: type=, source=, target=, readonly, bind-propagation=, volume-nocopy, "
                        "tmpfs-size=, tmpfs-mode= (a missing bind source is an error)")
    g.add_argument("--tmpfs", action="append", default=[], metavar="DST[:OPTIONS]", help="mount a tmpfs")


def _truth(key: str, value: str | None) -> bool:
    from graph.errors import InvalidInput

    if value is None or value.lower() in ("1", "true"):
        return True
    if value.lower() in ("0", "false"):
        return False
    raise InvalidInput(f"invalid --mount field {key}={value!r}: want true or false")


def _size(s: str) -> int:
    from lamina.containerconfig import parse_memory

    return parse_memory(s)


def parse_mount(text: str) -> dict[str, Any]:
    """One ``--mount`` value (a CSV list of key=value) as an Engine API ``Mount`` object."""
    import csv

    from graph.errors import InvalidInput

    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        raise InvalidInput(f"invalid --mount {text!r}: not a comma-separated list") from None
    m: dict[str, Any] = {"Type": "volume"}
    for f in fields:
        key, eq, value = f.partition("=")
        key = key.strip().lower()
        v: str | None = value if eq else None
        if key == "type":
            m["Type"] = value
        elif key in ("source", "src"):
            m["Source"] = value
        elif key in ("target", "destination", "dst"):
            m["Target"] = value
        elif key in ("readonly", "ro"):
            m["ReadOnly"] = _truth(key, v)
        elif key == "bind-propagation":
            m.setdefault("BindOptions", {})["Propagation"] = value
        elif key == "volume-nocopy":
            m.setdefault("VolumeOptions", {})["NoCopy"] = _truth(key, v)
        elif key == "volume-label":
            k, _, lv = value.partition("=")
            m.setdefault("VolumeOptions", {}).setdefault("Labels", {})[k] = lv
        elif key == "tmpfs-size":
            m.setdefault("TmpfsOptions", {})["SizeBytes"] = _size(value)
        elif key == "tmpfs-mode":
            try:
                m.setdefault("TmpfsOptions", {})["Mode"] = int(value, 8)
            except ValueError:
                raise InvalidInput(f"invalid --mount tmpfs-mode {value!r}: want an octal mode") from None
        elif key == "consistency":
            pass  # macOS only; Docker ignores it on Linux
        else:
            raise InvalidInput(f"invalid --mount field {f!r}: unknown key {key!r}")
    if "Target" not in m:
        raise InvalidInput(f"invalid --mount {text!r}: target= is required")
    return m


def parse_restart(text: str) -> dict[str, Any]:
    """``--restart no|on-failure[:N]|always|unless-stopped`` as Docker's ``RestartPolicy``."""
    from graph.errors import InvalidInput

    name, colon, count = text.partition(":")
    if name not in ("no", "on-failure", "always", "unless-stopped") or (colon and name != "on-failure"):
        raise InvalidInput(f"invalid restart policy {text!r}: want no, on-failure[:N], always or unless-stopped")
    n = 0
    if colon:
        if not count.isdigit():
            raise InvalidInput(f"invalid restart policy {text!r}: the maximum retry count must be a number")
        n = int(count)
    return {"Name": name, "MaximumRetryCount": n}


def apply(args: argparse.Namespace, cfg: dict[str, Any]) -> dict[str, Any]:
    """Write this module's flags into ``cfg`` (a record from ``containerconfig.user_config``)."""
    from graph.errors import InvalidInput

    hc = cfg.setdefault("HostConfig", {})
    cfg["Tty"] = bool(getattr(args, "tty", False))
    cfg["OpenStdin"] = bool(getattr(args, "interactive", False))
    cfg["AttachStdin"] = cfg["OpenStdin"]
    cfg["StdinOnce"] = cfg["OpenStdin"]
    hc["RestartPolicy"] = parse_restart(getattr(args, "restart", "no") or "no")
    binds: list[str] = []
    volumes: dict[str, Any] = dict(cfg.get("Volumes") or {})
    for v in args.volume:
        if ":" not in v:
            if not v.startswith("/"):
                raise InvalidInput(f"invalid volume specification {v!r}: an anonymous volume's path must be absolute")
            volumes[v] = {}
        else:
            binds.append(v)
    if binds:
        hc["Binds"] = binds
    if volumes:
        cfg["Volumes"] = volumes
    if args.mount:
        hc["Mounts"] = [parse_mount(m) for m in args.mount]
    if args.tmpfs:
        tmpfs: dict[str, str] = {}
        for t in args.tmpfs:
            target, _, opts = t.partition(":")
            tmpfs[target] = opts
        hc["Tmpfs"] = tmpfs
    return cfg
