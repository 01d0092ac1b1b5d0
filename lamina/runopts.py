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
    sec = p.add_argument_group("security and process")
    sec.add_argument("--security-opt", action="append", default=[], metavar="OPT",
                     help="seccomp=unconfined|PROFILE.json, no-new-privileges")
    sec.add_argument("--cap-add", action="append", default=[], metavar="CAP", help="add a capability (ALL: every one)")
    sec.add_argument("--cap-drop", action="append", default=[], metavar="CAP", help="drop a capability (ALL: every one)")
    sec.add_argument("--privileged", action="store_true", help="all capabilities, no seccomp, all devices")
    sec.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    sec.add_argument("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]", help="a resource limit")
    sec.add_argument("--init", action="store_true", help="run an init (tini) as PID 1 that reaps zombies")
    sec.add_argument("--shm-size", default=None, metavar="BYTES", help="size of /dev/shm (default 64m)")
    sec.add_argument("--device", action="append", default=[], metavar="HOST[:CTR[:PERMS]]", help="add a host device")
    sec.add_argument("--group-add", action="append", default=[], metavar="GROUP", help="an additional group")
    sec.add_argument("--add-host", action="append", default=[], metavar="NAME:IP", help="a line for /etc/hosts")
    sec.add_argument("--dns", action="append", default=[], metavar="IP", help="a name server for /etc/resolv.conf")
    sec.add_argument("--dns-search", action="append", default=[], metavar="DOMAIN", help="a DNS search domain")
    sec.add_argument("--dns-option", action="append", default=[], metavar="OPT", help="a resolv.conf option")
    sec.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE", help="set a label")
    sec.add_argument("--env-file", action="append", default=[], metavar="FILE", help="read KEY=VALUE lines")
    sec.add_argument("--stop-signal", default=None, metavar="SIGNAL", help="signal that stops the container")
    sec.add_argument("--stop-timeout", type=int, default=None, metavar="SECONDS",
                     help="seconds from the stop signal to SIGKILL")
    h = p.add_argument_group("health check")
    h.add_argument("--health-cmd", default=None, metavar="CMD", help="command to run to check health (sh -c)")
    h.add_argument("--health-interval", default=None, metavar="DURATION", help="time between checks (default 30s)")
    h.add_argument("--health-timeout", default=None, metavar="DURATION", help="time a check may take (default 30s)")
    h.add_argument("--health-retries", type=int, default=None, metavar="N", help="failures before unhealthy (default 3)")
    h.add_argument("--health-start-period", default=None, metavar="DURATION",
                   help="start-up time in which failures do not count")
    h.add_argument("--no-healthcheck", action="store_true", help="disable the image's HEALTHCHECK")
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
    _apply_security(args, cfg, hc)
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


def parse_ulimit(text: str) -> dict[str, Any]:
    """``--ulimit nofile=1024:2048`` as Docker's ``Ulimit`` object."""
    from graph.errors import InvalidInput

    name, eq, value = text.partition("=")
    soft, colon, hard = value.partition(":")
    try:
        s, h = int(soft), int(hard) if colon else int(soft)
    except ValueError:
        raise InvalidInput(f"invalid --ulimit {text!r}: want NAME=SOFT[:HARD]") from None
    if not eq or not name:
        raise InvalidInput(f"invalid --ulimit {text!r}: want NAME=SOFT[:HARD]")
    return {"Name": name, "Soft": s, "Hard": h}


def parse_device(text: str) -> dict[str, Any]:
    """``--device /dev/x[:/dev/y[:rwm]]`` as Docker's ``DeviceMapping``."""
    parts = text.split(":")
    host = parts[0]
    ctr = parts[1] if len(parts) > 1 and parts[1].startswith("/") else host
    perms = parts[-1] if len(parts) > 1 and not parts[-1].startswith("/") else "rwm"
    return {"PathOnHost": host, "PathInContainer": ctr, "CgroupPermissions": perms}


def read_env_file(path: str) -> list[str]:
    """Docker's ``--env-file``: KEY=VALUE lines; ``#`` comments and blank lines skipped; a bare
    KEY takes the caller's value (dropped when unset)."""
    from graph.errors import InvalidInput
    from lamina import config

    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InvalidInput(f"--env-file {path}: {e.strerror}") from None
    out = []
    for line in lines:
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key, eq, _v = line.partition("=")
        if not key or any(ch.isspace() for ch in key):
            raise InvalidInput(f"--env-file {path}: invalid line {line!r}")
        if eq:
            out.append(line)
        else:
            v = config.client_env(key)
            if v is not None:
                out.append(f"{key}={v}")
    return out


def _seccomp_opt(opt: str) -> str:
    """``seccomp=FILE``: the CLI sends the file's content, as the docker CLI does."""
    from graph.errors import InvalidInput

    key, sep, value = opt.partition("=")
    if key != "seccomp" or not sep or value in ("unconfined", "builtin", "default", ""):
        return opt
    try:
        with open(value, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise InvalidInput(f"opening seccomp profile ({value}) failed: {e.strerror}") from None
    import json

    try:
        json.loads(text)
    except ValueError:
        raise InvalidInput(f"seccomp profile {value}: not JSON") from None
    return f"seccomp={text}"


def _apply_security(args: argparse.Namespace, cfg: dict[str, Any], hc: dict[str, Any]) -> None:
    from graph.errors import InvalidInput
    from lamina.containerconfig import parse_memory

    if args.security_opt:
        hc["SecurityOpt"] = [_seccomp_opt(o) for o in args.security_opt]
    if args.cap_add:
        hc["CapAdd"] = list(args.cap_add)
    if args.cap_drop:
        hc["CapDrop"] = list(args.cap_drop)
    if args.privileged:
        hc["Privileged"] = True
    if args.read_only:
        hc["ReadonlyRootfs"] = True
    if args.ulimit:
        hc["Ulimits"] = [parse_ulimit(u) for u in args.ulimit]
    if args.init:
        hc["Init"] = True
    if args.shm_size is not None:
        hc["ShmSize"] = parse_memory(args.shm_size)
    if args.device:
        hc["Devices"] = [parse_device(d) for d in args.device]
    if args.group_add:
        hc["GroupAdd"] = list(args.group_add)
    if args.add_host:
        hc["ExtraHosts"] = [h.replace("=", ":", 1) if "=" in h else h for h in args.add_host]
    if args.dns:
        hc["Dns"] = list(args.dns)
    if args.dns_search:
        hc["DnsSearch"] = list(args.dns_search)
    if args.dns_option:
        hc["DnsOptions"] = list(args.dns_option)
    if args.label:
        labels = dict(cfg.get("Labels") or {})
        for item in args.label:
            k, _, v = item.partition("=")
            if not k:
                raise InvalidInput(f"invalid label {item!r}: want KEY=VALUE")
            labels[k] = v
        cfg["Labels"] = labels
    if args.env_file:
        keys = {e.partition("=")[0] for e in cfg.get("Env") or []}
        from_files = [e for f in args.env_file for e in read_env_file(f)]
        cfg["Env"] = [e for e in from_files if e.partition("=")[0] not in keys] + list(cfg.get("Env") or [])
    if args.stop_signal:
        from runtime.oci import signal_number

        signal_number(args.stop_signal)
        cfg["StopSignal"] = args.stop_signal
    if args.stop_timeout is not None:
        cfg["StopTimeout"] = args.stop_timeout
    _apply_health(args, cfg)


_UNITS = {"ns": 1, "us": 1000, "µs": 1000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
          "h": 3_600_000_000_000}


def parse_duration(text: str) -> int:
    """A Go duration (``30s``, ``1m30s``, ``100ms``) in nanoseconds, as Docker's flags take."""
    import re

    from graph.errors import InvalidInput

    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidInput(f"invalid duration {text!r}: want e.g. 30s, 1m30s, 500ms")
    return int(sum(float(n) * _UNITS[u] for n, u in parts))


def _apply_health(args: argparse.Namespace, cfg: dict[str, Any]) -> None:
    from graph.errors import InvalidInput

    if args.no_healthcheck:
        if args.health_cmd:
            raise InvalidInput("--no-healthcheck conflicts with --health-* options")
        cfg["Healthcheck"] = {"Test": ["NONE"]}
        return
    hc: dict[str, Any] = {}
    if args.health_cmd:
        hc["Test"] = ["CMD-SHELL", args.health_cmd]
    for flag, key in (("health_interval", "Interval"), ("health_timeout", "Timeout"),
                      ("health_start_period", "StartPeriod")):
        if getattr(args, flag) is not None:
            hc[key] = parse_duration(getattr(args, flag))
    if args.health_retries is not None:
        if args.health_retries < 0:
            raise InvalidInput("--health-retries cannot be negative")
        hc["Retries"] = args.health_retries
    if hc:
        cfg["Healthcheck"] = hc
