"""Volumes for real: ``-v``/``--mount``/``--tmpfs`` binds, named and anonymous volumes with
Docker's copy-up, on crun and runc, overlay and vfs. Each store is torn down by the runtime
conftest, which fails the test if a mount, runtime state, cgroup or monitor was left."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import pytest

import runtime
from graph import Store
from graph.errors import Conflict, InvalidInput, NotFound
from lamina import containerconfig as cc
from lamina import runopts
from tests.runtime.busybox import leftovers, write_busybox_layout
from tests.tarbuild import E

RUNTIMES = [n for n in ("crun", "runc") if __import__("shutil").which(n)]


@pytest.fixture(scope="session")
def vol_layout(tmp_path_factory: pytest.TempPathFactory, bb_layout: Path) -> Path:
    """``vol:1``: busybox plus ``/data/seed`` and ``/cfg/a`` under ``VOLUME /data``, and two
    hostile links: ``/escape`` -> many ``..`` then the host's temp dir, ``/abs`` -> that dir as
    an absolute path (inside the container both stay in its root)."""
    del bb_layout
    host_dir = str(tmp_path_factory.getbasetemp() / "host-secret")
    Path(host_dir).mkdir(exist_ok=True)
    (Path(host_dir) / "secret").write_text("host data\n")
    extra = [E("data", kind="dir", mode=0o750, uid=1000, gid=1000), E("data/seed", b"from the image\n"),
             E("cfg", kind="dir"), E("cfg/a", b"A\n"),
             E("escape", kind="symlink", target="../../../../../../../.." + host_dir),
             E("abs", kind="symlink", target=host_dir)]
    return write_busybox_layout(tmp_path_factory.mktemp("vol") / "oci", tag="vol:1", extra=extra,
                                extra_config={"Volumes": {"/data": {}}})


@pytest.fixture
def store(rt_store: Store, vol_layout: Path) -> Store:
    from graph.archive import load_archive

    load_archive(rt_store, vol_layout)
    return rt_store


def flags_of(volume: list[str] = (), mount: list[str] = (), tmpfs: list[str] = ()) -> argparse.Namespace:  # type: ignore[assignment]
    """Parsed ``run`` flags, as the CLI gives them to ``runopts.apply``."""
    p = argparse.ArgumentParser()
    runopts.add_options(p)
    argv = [a for v in volume for a in ("-v", v)] + [a for m in mount for a in ("--mount", m)]
    argv += [a for t in tmpfs for a in ("--tmpfs", t)]
    return p.parse_args(argv)


def config(store: Store, image: str, cmd: list[str], *, rm: bool = True, **flags: Any) -> dict[str, Any]:
    img = store.resolve_image(image)
    user = runopts.apply(flags_of(**flags), cc.user_config(image, cmd=cmd))
    cfg = cc.merge(user, store.images.config(img.id).config)
    cfg["HostConfig"]["AutoRemove"] = rm
    return cfg


def run(store: Store, cmd: list[str], *, image: str = "bb:1", rt: str | None = None, rm: bool = True,
        name: str | None = None, **flags: Any) -> tuple[int, bytes, bytes]:
    r = runtime.run(store, image, name=name, config=config(store, image, cmd, rm=rm, **flags), runtime=rt)
    out, err = io.BytesIO(), io.BytesIO()
    code = runtime.wait(store, r, out, err)
    return code, out.getvalue(), err.getvalue()


def sh(store: Store, script: str, **kw: Any) -> tuple[int, bytes, bytes]:
    return run(store, ["sh", "-c", script], **kw)


def nothing_created(store: Store) -> None:
    assert store.containers.list() == []
    assert [p.name for p in (store.root / "containers").iterdir()] == []
    assert store.volumes.list() == []
    assert leftovers(store.root, []) == []


# ---- binds ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rt", RUNTIMES)
def test_bind_rw_and_ro(store: Store, rt: str, tmp_path: Path) -> None:
    host = tmp_path / "share"
    host.mkdir()
    (host / "in").write_text("hello\n")
    code, out, _ = sh(store, "cat /mnt/in; echo out > /mnt/out", rt=rt, volume=[f"{host}:/mnt"])
    assert (code, out) == (0, b"hello\n")
    assert (host / "out").read_text() == "out\n"
    code, out, err = sh(store, "cat /mnt/in; echo x > /mnt/new", rt=rt, volume=[f"{host}:/mnt:ro"])
    assert code != 0 and out == b"hello\n" and b"Read-only file system" in err
    assert not (host / "new").exists()
    code, _, err = sh(store, "touch /m/x", rt=rt, mount=[f"type=bind,source={host},target=/m,readonly"])
    assert code != 0 and b"Read-only file system" in err


def test_v_creates_a_missing_host_dir_but_mount_refuses(store: Store, tmp_path: Path) -> None:
    missing = tmp_path / "made" / "by-v"
    code, _, _ = sh(store, "echo hi > /x/f", volume=[f"{missing}:/x"])
    assert code == 0 and (missing / "f").read_text() == "hi\n"
    other = tmp_path / "nope"
    with pytest.raises(InvalidInput, match="bind source path does not exist"):
        sh(store, "true", mount=[f"type=bind,source={other},target=/x"])
    assert not other.exists()
    nothing_created(store)


def test_bind_a_file(store: Store, tmp_path: Path) -> None:
    f = tmp_path / "conf"
    f.write_text("line\n")
    assert sh(store, "cat /etc/app.conf", volume=[f"{f}:/etc/app.conf:ro"])[:2] == (0, b"line\n")


# ---- named and anonymous volumes --------------------------------------------------------------------
@pytest.mark.parametrize("rt", RUNTIMES)
def test_named_volume_outlives_containers_and_lamina(store: Store, rt: str) -> None:
    assert sh(store, "echo kept > /v/f", rt=rt, volume=["keep:/v"])[0] == 0
    v = store.volumes.get("keep")
    assert Path(v.mountpoint, "f").read_text() == "kept\n" and not v.anonymous
    assert store.volumes.users("keep") == []  # --rm container gone, volume kept
    root, driver = store.root, store.driver_name
    store.close()
    with Store(root, driver=driver) as again:  # "lamina restarts"
        assert sh(again, "cat /w/f", rt=rt, mount=["type=volume,source=keep,target=/w"])[:2] == (0, b"kept\n")
        again.volumes.remove("keep")
    store.__init__(root, driver=driver)  # type: ignore[misc]  # the fixture tears this one down


def test_a_volume_in_use_cannot_be_removed(store: Store) -> None:
    code, _, _ = sh(store, "true", rm=False, name="user", volume=["busy:/v"])
    assert code == 0
    with pytest.raises(Conflict, match="volume is in use"):
        store.volumes.remove("busy")
    assert store.volumes.prune(all_named=True) == ([], 0)
    runtime.remove(store, "user", volumes=True)  # -v: anonymous only; a named one stays
    assert [v.name for v in store.volumes.list()] == ["busy"]
    store.volumes.remove("busy")
    with pytest.raises(NotFound):
        store.volumes.get("busy")


def test_anonymous_volumes_go_with_rm_v_and_with_rm(store: Store) -> None:
    code, _, _ = sh(store, "echo a > /anon/f", rm=False, name="keeper", volume=["/anon"])
    assert code == 0
    (v,) = store.volumes.list()
    assert v.anonymous and len(v.name) == 64 and store.volumes.users(v.name) == [store.containers.get("keeper").id]
    runtime.remove(store, "keeper")  # without -v the volume stays, unused
    assert [x.name for x in store.volumes.list()] == [v.name] and store.volumes.users(v.name) == []
    assert store.volumes.prune() == ([v.name], 2)
    assert sh(store, "true", volume=["/anon2"])[0] == 0  # --rm takes its anonymous volumes along
    assert store.volumes.list() == []


# ---- copy-up ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rt", RUNTIMES)
def test_image_volume_is_anonymous_and_copied_up(store: Store, rt: str) -> None:
    code, out, _ = sh(store, "cat /data/seed; stat -c '%u %a' /data; echo new > /data/n", image="vol:1",
                      rt=rt, rm=False, name="c1")
    assert (code, out) == (0, b"from the image\n1000 750\n")
    (v,) = store.volumes.list()
    assert v.anonymous and sorted(p.name for p in Path(v.mountpoint).iterdir()) == ["n", "seed"]
    runtime.remove(store, "c1", volumes=True)
    assert store.volumes.list() == []


def test_named_volume_copy_up_only_into_an_empty_volume(store: Store) -> None:
    assert sh(store, "cat /cfg/a", image="vol:1", volume=["cfgv:/cfg"])[:2] == (0, b"A\n")
    path = Path(store.volumes.get("cfgv").mountpoint)
    (path / "a").write_text("changed\n")
    assert sh(store, "cat /cfg/a", image="vol:1", volume=["cfgv:/cfg"])[:2] == (0, b"changed\n")
    assert sh(store, "ls /cfg | wc -l", image="vol:1", volume=["empty:/cfg:nocopy"])[:2] == (0, b"0\n")
    for n in ("cfgv", "empty"):
        store.volumes.remove(n)


# ---- tmpfs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rt", RUNTIMES)
def test_tmpfs(store: Store, rt: str) -> None:
    code, out, _ = sh(store, "grep ' /scratch ' /proc/mounts; grep ' /t2 ' /proc/mounts", rt=rt,
                      tmpfs=["/scratch:size=1m,mode=1777"], mount=["type=tmpfs,target=/t2,tmpfs-size=2m"])
    lines = out.decode().splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith("tmpfs /scratch tmpfs ") and "size=1024k" in lines[0] and "noexec" in lines[0]
    assert "size=2048k" in lines[1]


# ---- hostile images: targets resolve inside the rootfs ---------------------------------------------------
@pytest.mark.parametrize("rt", RUNTIMES)
def test_symlink_at_a_volume_target_stays_in_the_rootfs(store: Store, rt: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    host = tmp_path_factory.getbasetemp() / "host-secret"
    before = sorted(p.name for p in host.iterdir())
    for target, path in (("/escape", "/escape"), ("/abs", "/abs"), ("/escape/sub", "/escape/sub"),
                         ("/x/../../escape/y", "/escape/y")):
        code, out, err = sh(store, f"echo in > {path}/f; ls {path}", image="vol:1", rt=rt, volume=[f"vv:{target}"])
        assert code == 0, err
        assert out == b"f\n"  # nothing of the host's directory was copied up
        assert sorted(p.name for p in host.iterdir()) == before  # no mount point, no file on the host
        assert sorted(p.name for p in Path(store.volumes.get("vv").mountpoint).iterdir()) == ["f"]
        store.volumes.remove("vv")
    code, _, err = sh(store, "true", image="vol:1", rt=rt, volume=[f"{host}:/abs/inner"])
    assert code == 0, err
    assert sorted(p.name for p in host.iterdir()) == before  # /abs/inner was made in the rootfs


# ---- bad input: one line, nothing created ----------------------------------------------------------------
@pytest.mark.parametrize("flags,message", [
    ({"mount": ["type=bind,source=/nonexistent-lamina,target=/x"]}, "bind source path does not exist"),
    ({"volume": ["/tmp:relative"]}, "mount path must be absolute"),
    ({"mount": ["type=volume,source=a,target=rel"]}, "mount path must be absolute"),
    ({"volume": ["a/b:/x"]}, "invalid characters for a local volume name"),
    ({"mount": ["type=volume,source=a/b,target=/x"]}, "invalid volume name"),
    ({"volume": ["/tmp:/x:maybe"]}, "unknown mode 'maybe'"),
    ({"mount": ["type=nfs,target=/x"]}, "invalid mount type"),
    ({"mount": ["source=x"]}, "target= is required"),
    ({"tmpfs": ["/t:bogus"]}, "invalid tmpfs option"),
    ({"volume": ["/a:/x", "vv:/x"]}, "duplicate mount point"),
])
def test_bad_mounts_are_refused_and_leave_nothing(store: Store, flags: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        sh(store, "true", **flags)
    nothing_created(store)
