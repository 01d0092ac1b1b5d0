"""A container's runtime spec: what lamina does with Docker's ``Config`` + ``HostConfig``,
validated in one place. The CLI (``lamina/runopts.py`` maps ``docker run`` flags onto Docker's
``HostConfig``) and the Engine API daemon (which receives ``HostConfig`` as it is) store the
same record; ``parse`` reads it, so both are honoured the same way and refused with the same
one-line errors (``InvalidInput``) before anything is created.

Mounts come from four places, as in Docker: ``HostConfig.Binds`` (``-v SRC:DST[:MODE]``
strings), ``HostConfig.Mounts`` (``--mount``: objects), ``HostConfig.Tmpfs`` (``--tmpfs``: a
map of target to options) and ``Config.Volumes`` (``-v DST`` and the image's ``VOLUME``s:
anonymous volumes unless another mount already has the target).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from graph import InvalidInput
from runtime.records import Record

BIND, VOLUME, TMPFS = "bind", "volume", "tmpfs"
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
TMPFS_DEFAULT = ["noexec", "nosuid", "nodev"]  # Docker's defaults for --tmpfs
_BIND_MODES = {"ro", "rw", "z", "Z", "nocopy", *PROPAGATIONS}


class Mount(Record):
    """One mount of the container. ``source``: a host path (bind), a volume name ('' for a new
    anonymous volume), '' (tmpfs). ``create_source``: a missing bind source is made (``-v``
    does that; ``--mount`` refuses). ``copy``: a volume starts with the image's content at the
    target (Docker's copy-up; ``nocopy`` turns it off). ``options``: propagation for binds,
    mount options for tmpfs."""

    __slots__ = ("type", "source", "target", "readonly", "options", "create_source", "copy")
    _defaults = {"readonly": False, "options": list, "create_source": False, "copy": True}
    type: str
    source: str
    target: str
    readonly: bool
    options: list[str]
    create_source: bool
    copy: bool

    def to_json(self) -> dict[str, Any]:
        return self.as_dict()

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Mount":
        return cls(**{k: d[k] for k in cls.__slots__ if k in d})


def clean_target(target: Any, what: str = "mount") -> str:
    """An absolute container path, cleaned lexically (``/a/../b`` -> ``/b``: a ``..`` can never
    climb above ``/``; symlinks are resolved later, inside the rootfs). InvalidInput if not
    absolute."""
    if not isinstance(target, str) or not target:
        raise InvalidInput(f"invalid {what}: no target path given")
    if "\0" in target:
        raise InvalidInput(f"invalid {what} target {target!r}: contains a NUL character")
    if not target.startswith("/"):
        raise InvalidInput(f"invalid {what} target {target!r}: mount path must be absolute")
    clean = posixpath.normpath(target)
    clean = "/" + clean.lstrip("/")
    if clean == "/":
        raise InvalidInput(f"invalid {what} target {target!r}: cannot mount over /")
    return clean


def _volume_name(name: str) -> str:
    from graph import check_volume_name

    return check_volume_name(name)


def parse_bind(spec: str) -> Mount:
    """One ``-v`` / ``Binds`` entry: ``/host:/ctr[:MODE]`` or ``NAME:/ctr[:MODE]`` (MODE a comma
    list of ro, rw, nocopy, z, Z and a propagation)."""
    if not isinstance(spec, str) or not spec:
        raise InvalidInput("invalid volume specification: empty")
    parts = spec.split(":")
    if len(parts) == 1:
        raise InvalidInput(f"invalid volume specification {spec!r}: want SOURCE:TARGET[:MODE] "
                           "(an anonymous volume is -v /TARGET)")
    if len(parts) > 3:
        raise InvalidInput(f"invalid volume specification {spec!r}: too many colons")
    source, target = parts[0], parts[1]
    modes = [m for m in (parts[2].split(",") if len(parts) == 3 else []) if m]
    for m in modes:
        if m not in _BIND_MODES:
            raise InvalidInput(f"invalid volume specification {spec!r}: unknown mode {m!r}")
    if "ro" in modes and "rw" in modes:
        raise InvalidInput(f"invalid volume specification {spec!r}: both ro and rw")
    props = [m for m in modes if m in PROPAGATIONS]
    if len(props) > 1:
        raise InvalidInput(f"invalid volume specification {spec!r}: more than one propagation")
    target = clean_target(target, "volume specification")
    readonly = "ro" in modes
    if source.startswith("/"):
        if "nocopy" in modes:
            raise InvalidInput(f"invalid volume specification {spec!r}: nocopy is for volumes")
        return Mount(BIND, posixpath.normpath(source), target, readonly, props or ["rprivate"],
                     create_source=True, copy=False)
    if not source:
        raise InvalidInput(f"invalid volume specification {spec!r}: empty source")
    if props:
        raise InvalidInput(f"invalid volume specification {spec!r}: propagation is for bind mounts")
    try:
        _volume_name(source)
    except InvalidInput:
        raise InvalidInput(f"invalid volume specification {spec!r}: {source!r} includes invalid characters "
                           "for a local volume name, only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed; a host "
                           "directory must be an absolute path") from None
    return Mount(VOLUME, source, target, readonly, [], copy="nocopy" not in modes)


def _bool(v: Any, what: str) -> bool:
    if isinstance(v, bool):
        return v
    if v in (None, ""):
        return False
    raise InvalidInput(f"invalid mount: {what} must be true or false")


def parse_mount_object(m: Mapping[str, Any]) -> Mount:
    """One ``HostConfig.Mounts`` object (``Type``, ``Source``, ``Target``, ``ReadOnly``,
    ``BindOptions``, ``VolumeOptions``, ``TmpfsOptions``), as the Engine API takes it."""
    if not isinstance(m, Mapping):
        raise InvalidInput("invalid mount: not an object")
    kind = m.get("Type")
    target = clean_target(m.get("Target"), f"mount (type {kind})")
    ro = _bool(m.get("ReadOnly"), "ReadOnly")
    source = m.get("Source") or ""
    if not isinstance(source, str):
        raise InvalidInput("invalid mount: Source must be a string")
    if kind == BIND:
        if not source:
            raise InvalidInput('invalid mount config for type "bind": field Source must not be empty')
        if not source.startswith("/"):
            raise InvalidInput(f'invalid mount config for type "bind": invalid mount path {source!r}: '
                               "mount path must be absolute")
        prop = (m.get("BindOptions") or {}).get("Propagation") or "rprivate"
        if prop not in PROPAGATIONS:
            raise InvalidInput(f"invalid mount: unknown bind propagation {prop!r}")
        return Mount(BIND, posixpath.normpath(source), target, ro, [prop], create_source=False, copy=False)
    if kind == VOLUME:
        if source:
            _volume_name(source)
        nocopy = _bool((m.get("VolumeOptions") or {}).get("NoCopy"), "VolumeOptions.NoCopy")
        return Mount(VOLUME, source, target, ro, [], copy=not nocopy)
    if kind == TMPFS:
        if source:
            raise InvalidInput('invalid mount config for type "tmpfs": field Source must be empty')
        opts = list(TMPFS_DEFAULT)
        t = m.get("TmpfsOptions") or {}
        size, mode = t.get("SizeBytes"), t.get("Mode")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput("invalid mount: tmpfs size must be a number of bytes")
            if size:
                opts.append(f"size={size}")
        if mode is not None:
            if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777:
                raise InvalidInput("invalid mount: tmpfs mode must be a file mode")
            opts.append(f"mode={mode:o}")
        return Mount(TMPFS, "", target, ro, opts, copy=False)
    raise InvalidInput(f"invalid mount type {kind!r}: lamina mounts bind, volume and tmpfs")


_TMPFS_FLAGS = {"ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "atime", "noatime",
                "relatime", "norelatime", "strictatime", "nostrictatime", "diratime", "nodiratime",
                "sync", "async", "dirsync", "mand", "nomand"}
_TMPFS_KEYS = {"size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "huge"}


def parse_tmpfs(target: str, options: str) -> Mount:
    """One ``HostConfig.Tmpfs`` entry: target and a comma list of mount options."""
    target = clean_target(target, "tmpfs")
    opts = list(TMPFS_DEFAULT)
    ro = False
    for o in [o for o in (options or "").split(",") if o]:
        key = o.partition("=")[0]
        if o in _TMPFS_FLAGS:
            if o in ("ro", "rw"):
                ro = o == "ro"
                continue
        elif "=" not in o or key not in _TMPFS_KEYS:
            raise InvalidInput(f"invalid tmpfs option {o!r} for {target}")
        opts.append(o)
    return Mount(TMPFS, "", target, ro, opts, copy=False)


def mounts(config: Mapping[str, Any]) -> list[Mount]:
    """Every mount the record asks for, validated; InvalidInput for a bad entry or two mounts
    on one target ("Duplicate mount point", as Docker). ``Config.Volumes`` entries whose target
    another mount covers are dropped (the user's mount wins over the image's VOLUME)."""
    hc = config.get("HostConfig") or {}
    out: list[Mount] = []
    for b in hc.get("Binds") or []:
        out.append(parse_bind(b))
    for m in hc.get("Mounts") or []:
        out.append(parse_mount_object(m))
    tmpfs = hc.get("Tmpfs") or {}
    if not isinstance(tmpfs, Mapping):
        raise InvalidInput("invalid Tmpfs: want a map of target to options")
    for t, o in tmpfs.items():
        out.append(parse_tmpfs(t, o if isinstance(o, str) else ""))
    seen: set[str] = set()
    for m in out:
        if m.target in seen:
            raise InvalidInput(f"duplicate mount point: {m.target}")
        seen.add(m.target)
    for t in config.get("Volumes") or {}:
        target = clean_target(t, "volume")
        if target not in seen:
            seen.add(target)
            out.append(Mount(VOLUME, "", target, False, []))
    return out


RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")


def restart_policy(config: Mapping[str, Any]) -> tuple[str, int]:
    """``HostConfig.RestartPolicy`` (``{"Name": ..., "MaximumRetryCount": N}``) as (name, N)."""
    hc = config.get("HostConfig") or {}
    rp = hc.get("RestartPolicy") or {}
    if not isinstance(rp, Mapping):
        raise InvalidInput("invalid RestartPolicy: want an object with Name and MaximumRetryCount")
    name = rp.get("Name") or "no"
    if name not in RESTART_POLICIES:
        raise InvalidInput(f"invalid restart policy {name!r}: want no, on-failure[:N], always or unless-stopped")
    n = rp.get("MaximumRetryCount") or 0
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise InvalidInput(f"invalid restart policy: maximum retry count {n!r} must be a positive number")
    if n and name != "on-failure":
        raise InvalidInput(f"invalid restart policy {name!r}: a maximum retry count is only for on-failure")
    if name != "no" and hc.get("AutoRemove"):
        raise InvalidInput("conflicting options: --restart and --rm (a removed container cannot restart)")
    return str(name), int(n)


class Spec(Record):
    """The parsed record: what ``runtime`` acts on besides the process (``runtime.bundle``):
    ``mounts``; ``tty`` and ``open_stdin`` (``Config.Tty``, ``Config.OpenStdin``); ``restart``
    and ``max_retries`` (``HostConfig.RestartPolicy``)."""

    __slots__ = ("mounts", "tty", "open_stdin", "restart", "max_retries")
    mounts: list[Mount]
    tty: bool
    open_stdin: bool
    restart: str
    max_retries: int


def parse(config: Mapping[str, Any]) -> Spec:
    """The record's spec, validated. Raises InvalidInput with one clear line."""
    name, retries = restart_policy(config)
    from runtime import security

    security.check(config)
    _check_etc(config)
    from runtime import health

    health.parse(config)
    return Spec(mounts=mounts(config), tty=bool(config.get("Tty")), open_stdin=bool(config.get("OpenStdin")),
                restart=name, max_retries=retries)


def _check_etc(config: Mapping[str, Any]) -> None:
    import ipaddress

    hc = config.get("HostConfig") or {}
    for d in hc.get("Dns") or []:
        try:
            ipaddress.ip_address(d)
        except ValueError:
            raise InvalidInput(f"invalid --dns {d!r}: not an IP address") from None
    for e in hc.get("ExtraHosts") or []:
        name, sep, ip = str(e).partition(":")
        if ip == "host-gateway":
            raise InvalidInput("--add-host host-gateway: lamina has no gateway to name")
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidInput(f"invalid --add-host {e!r}: want NAME:IP") from None
        if not sep or not name:
            raise InvalidInput(f"invalid --add-host {e!r}: want NAME:IP")
    t = config.get("StopTimeout")
    if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < -1):
        raise InvalidInput(f"invalid --stop-timeout {t!r}: seconds")
    if config.get("StopSignal"):
        from runtime.oci import signal_number

        signal_number(str(config["StopSignal"]))
