"""``User`` (``-u``) resolved through the image's ``/etc/passwd`` and ``/etc/group``, with runc's
rules (libcontainer/user ``GetExecUser``), which are Docker's:

- ``""`` is root (uid 0, gid 0) with root's home from passwd, if any;
- ``name`` must be in passwd; a number is a uid, in passwd or not;
- ``user:group``: the group by name must be in the group file, a number is a gid as it is, and
  an explicit group gives no supplementary groups;
- without an explicit group, a user found in passwd gets its passwd gid and, as supplementary
  groups, every group whose member list names it.

The files are read through ``runtime.rootfs`` (an image's symlinks cannot point the lookup at
the host) and parsed leniently, as runc does (a malformed line is skipped, not fatal).
"""

from __future__ import annotations

from graph import InvalidInput
from runtime import rootfs
from runtime.records import Record

MAX_ID = (1 << 31) - 1
MAX_FILE = 4 << 20  # a passwd or group file larger than this is not one


class ExecUser(Record):
    """Who the container's process runs as."""

    __slots__ = ("uid", "gid", "additional_gids", "home", "name")
    _defaults = {"additional_gids": (), "home": "/", "name": None}
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    home: str
    name: str | None


class PasswdEntry(Record):
    __slots__ = ("name", "uid", "gid", "home")
    name: str
    uid: int
    gid: int
    home: str


class GroupEntry(Record):
    __slots__ = ("name", "gid", "members")
    name: str
    gid: int
    members: tuple[str, ...]


def _int(s: str) -> int | None:
    s = s.strip()
    if not s or not (s.isdigit() or (s[0] in "+-" and s[1:].isdigit())):
        return None
    return int(s)


def _lines(data: bytes) -> list[list[str]]:
    out = []
    for raw in data.decode("utf-8", errors="replace").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(line.split(":"))
    return out


def parse_passwd(data: bytes) -> list[PasswdEntry]:
    """``name:password:uid:gid:gecos:home:shell`` lines; lines without a numeric uid and gid are
    skipped."""
    out = []
    for f in _lines(data):
        if len(f) < 4:
            continue
        uid, gid = _int(f[2]), _int(f[3])
        if uid is None or gid is None:
            continue
        out.append(PasswdEntry(f[0], uid, gid, f[5] if len(f) > 5 and f[5] else "/"))
    return out


def parse_group(data: bytes) -> list[GroupEntry]:
    """``name:password:gid:member,member`` lines; lines without a numeric gid are skipped."""
    out = []
    for f in _lines(data):
        if len(f) < 3:
            continue
        gid = _int(f[2])
        if gid is None:
            continue
        members = tuple(m.strip() for m in f[3].split(",") if m.strip()) if len(f) > 3 else ()
        out.append(GroupEntry(f[0], gid, members))
    return out


def _check_range(kind: str, spec: str, n: int) -> int:
    if n < 0 or n > MAX_ID:
        raise InvalidInput(f"invalid user {spec!r}: {kind} {n} out of range 0..{MAX_ID}")
    return n


def resolve_user(root: str, spec: str) -> ExecUser:
    """The user ``spec`` (``""``, ``name``, ``uid``, ``name:group``, ``uid:gid``) in the rootfs at
    ``root`` (host path of the container's ``/``).

    Raises: InvalidInput naming the user or group that is not in the image's files, or an id
    out of range.
    """
    if "\0" in spec:
        raise InvalidInput("invalid user: contains a NUL character")
    user_arg, _, group_arg = spec.partition(":")
    passwd_data = rootfs.read_file(root, "/etc/passwd", MAX_FILE)
    group_data = rootfs.read_file(root, "/etc/group", MAX_FILE)
    passwd = parse_passwd(passwd_data) if passwd_data is not None else []
    groups = parse_group(group_data) if group_data is not None else []

    uid_arg = _int(user_arg)
    if user_arg == "":
        found = next((u for u in passwd if u.uid == 0), None)
    elif uid_arg is not None:
        found = next((u for u in passwd if u.uid == uid_arg), None)
    else:
        found = next((u for u in passwd if u.name == user_arg), None)

    uid, gid, home, name = 0, 0, "/", None
    if found is not None:
        uid, gid, home, name = found.uid, found.gid, found.home, found.name
    elif user_arg:
        if uid_arg is None:
            where = "no /etc/passwd in the image" if passwd_data is None else "no matching entry in /etc/passwd"
            raise InvalidInput(f"unable to find user {user_arg}: {where}")
        uid = _check_range("uid", spec, uid_arg)

    extra: tuple[int, ...] = ()
    if group_arg:
        gid_arg = _int(group_arg)
        if gid_arg is not None:
            match = next((g for g in groups if g.gid == gid_arg), None)
        else:
            match = next((g for g in groups if g.name == group_arg), None)
        if match is not None:
            gid = match.gid
        elif gid_arg is None:
            where = "no /etc/group in the image" if group_data is None else "no matching entry in /etc/group"
            raise InvalidInput(f"unable to find group {group_arg}: {where}")
        else:
            gid = _check_range("gid", spec, gid_arg)
    elif name is not None:
        extra = tuple(g.gid for g in groups if name in g.members)
    return ExecUser(uid=uid, gid=gid, additional_gids=extra, home=home, name=name)
