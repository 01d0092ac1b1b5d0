"""``User`` resolution through the image's passwd and group files (runc's rules), and the
root-scoped lookups it reads them with (``runtime.rootfs``), including hostile images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from graph.errors import InvalidInput
from runtime import rootfs
from runtime.users import ExecUser, parse_group, parse_passwd, resolve_user

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
broken line
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:100::/home/bob:/bin/sh
weird:x:notanumber:5::/:/bin/sh
"""
GROUP = """root:x:0:
users:x:100:bob
staff:x:50:alice,bob
wheel:x:10:alice
empty:x:200:
"""


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    return root


def test_parsers_skip_malformed_lines() -> None:
    users = parse_passwd(PASSWD.encode())
    assert [u.name for u in users] == ["root", "daemon", "alice", "bob"]
    assert users[3].gid == 100 and users[3].home == "/home/bob"
    groups = parse_group(GROUP.encode())
    assert groups[2].members == ("alice", "bob") and groups[4].members == ()


@pytest.mark.parametrize("spec,want", [
    ("", ExecUser(0, 0, (), "/root", "root")),
    ("root", ExecUser(0, 0, (), "/root", "root")),
    ("0", ExecUser(0, 0, (), "/root", "root")),
    ("alice", ExecUser(1000, 1000, (50, 10), "/home/alice", "alice")),
    ("1000", ExecUser(1000, 1000, (50, 10), "/home/alice", "alice")),
    ("bob", ExecUser(1001, 100, (100, 50), "/home/bob", "bob")),
    ("alice:staff", ExecUser(1000, 50, (), "/home/alice", "alice")),
    ("alice:4242", ExecUser(1000, 4242, (), "/home/alice", "alice")),
    ("4242", ExecUser(4242, 0, (), "/", None)),
    ("4242:4343", ExecUser(4242, 4343, (), "/", None)),
    ("4242:wheel", ExecUser(4242, 10, (), "/", None)),
])
def test_resolution_follows_runc(image: Path, spec: str, want: ExecUser) -> None:
    assert resolve_user(str(image), spec) == want


@pytest.mark.parametrize("spec,message", [
    ("mallory", "unable to find user mallory: no matching entry in /etc/passwd"),
    ("alice:nogroup", "unable to find group nogroup: no matching entry in /etc/group"),
    ("99999999999", "out of range"),
    ("1:99999999999", "out of range"),
    ("a\0b", "NUL"),
])
def test_bad_users_name_the_cause(image: Path, spec: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        resolve_user(str(image), spec)


def test_image_without_passwd_takes_numbers_only(tmp_path: Path) -> None:
    root = tmp_path / "bare"
    root.mkdir()
    assert resolve_user(str(root), "") == ExecUser(0, 0, (), "/", None)
    assert resolve_user(str(root), "123:456") == ExecUser(123, 456, (), "/", None)
    with pytest.raises(InvalidInput, match="no /etc/passwd in the image"):
        resolve_user(str(root), "alice")
    with pytest.raises(InvalidInput, match="no /etc/group in the image"):
        resolve_user(str(root), "1:staff")


# ---- hostile images ------------------------------------------------------------------------
def test_passwd_symlink_to_the_host_is_resolved_inside_the_image(tmp_path: Path) -> None:
    """An image whose /etc/passwd points at an absolute path must not read the host's file."""
    host = tmp_path / "host-secret"
    host.write_text("mallory:x:0:0::/:/bin/sh\n")
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.symlink(str(host), root / "etc/passwd")  # absolute: means <root>/<host path> in the container
    with pytest.raises(InvalidInput, match="unable to find user mallory"):
        resolve_user(str(root), "mallory")
    os.unlink(root / "etc/passwd")
    os.symlink("../../../../../../../../" + str(host), root / "etc/passwd")  # .. stops at the root
    with pytest.raises(InvalidInput, match="unable to find user mallory"):
        resolve_user(str(root), "mallory")


def test_directory_links_are_scoped_to_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc/passwd").write_text("mallory:x:0:0::/:/bin/sh\n")
    root = tmp_path / "rootfs"
    root.mkdir()
    os.symlink("/../..", root / "up")
    os.symlink(f"up/{outside.relative_to('/')}/etc", root / "etc")
    assert rootfs.resolve(str(root), "/etc/passwd").startswith(str(root) + "/")
    with pytest.raises(InvalidInput):
        resolve_user(str(root), "mallory")


def test_link_loops_and_special_files_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.symlink("passwd", root / "etc/passwd")  # a loop
    with pytest.raises(InvalidInput, match="symbolic links"):
        resolve_user(str(root), "x")
    os.unlink(root / "etc/passwd")
    os.mkfifo(root / "etc/passwd")  # reading a FIFO would block for ever
    with pytest.raises(InvalidInput, match="no /etc/passwd in the image"):
        resolve_user(str(root), "alice")


def test_find_executable_and_make_dirs(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin/tool").write_text("#!/bin/sh\n")
    os.chmod(root / "bin/tool", 0o755)
    (root / "bin/data").write_text("not a program")
    os.symlink("/bin", root / "sbin")
    assert rootfs.find_executable(str(root), "tool", "/usr/bin:/sbin") == "/sbin/tool"
    assert rootfs.find_executable(str(root), "/bin/tool", "") == "/bin/tool"
    assert rootfs.find_executable(str(root), "data", "/bin") is None
    assert rootfs.find_executable(str(root), "../bin/tool", "", cwd="/sbin") == "/sbin/../bin/tool"
    os.symlink("/../../../../tmp", root / "escape")
    rootfs.make_dirs(str(root), "/escape/made/here")
    assert (root / "tmp/made/here").is_dir()  # created inside the root, not in the host's /tmp
    (root / "file").write_text("")
    with pytest.raises(InvalidInput, match="not a directory"):
        rootfs.make_dirs(str(root), "/file/sub")
