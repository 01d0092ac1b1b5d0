"""``lamina volume`` and ``run -v`` end to end: the real program in subprocesses, on overlay and
vfs (crun). Teardown as ``test_run.py`` (nothing may be left)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Lamina
from tests.integration.test_run import cli, inspect, layout  # noqa: F401 - fixtures

__all__ = ["cli", "layout"]


def test_volume_commands_and_data_across_containers(cli: Lamina) -> None:  # noqa: F811
    assert cli("volume", "create", "data").out == "data\n"
    assert cli("volume", "create", "data").out == "data\n"  # Docker: creating an existing one is fine
    cli("run", "--rm", "-v", "data:/d", "bb:1", "sh", "-c", "echo saved > /d/f")
    assert cli("run", "--rm", "--mount", "type=volume,src=data,dst=/e,readonly", "bb:1", "cat", "/e/f").out == "saved\n"
    ls = cli("volume", "ls").lines
    assert ls[0].split() == ["DRIVER", "VOLUME", "NAME"] and ls[1].split() == ["local", "data"]
    (doc,) = json.loads(cli("volume", "inspect", "data").out)
    assert doc["Name"] == "data" and doc["Driver"] == "local" and doc["Scope"] == "local"
    assert Path(doc["Mountpoint"], "f").read_text() == "saved\n"
    assert doc["Mountpoint"] == str(cli.root / "volumes" / "data" / "_data")
    cli("create", "--name", "holder", "-v", "data:/d", "-v", "/anon", "bb:1", "true")
    r = cli.fails("volume", "rm", "data", code=4)
    assert "volume is in use" in r.err
    mounts = inspect(cli, "holder")["Mounts"]
    assert sorted((m["Type"], m["Destination"]) for m in mounts) == [("volume", "/anon"), ("volume", "/d")]  # type: ignore[index,union-attr]
    assert "MountPoints" not in inspect(cli, "holder")["Config"]  # type: ignore[operator]
    df = json.loads(cli("system", "df", "--format", "json").out)["Volumes"]
    assert df["Total"] == 2 and df["Active"] == 2 and df["Size"] == 6
    assert "Volumes" in cli("system", "df").out
    cli("rm", "-v", "holder")  # the anonymous one goes, the named one stays
    assert cli("volume", "ls", "-q").out == "data\n"
    out = cli("system", "prune", "-f", "--volumes").out
    assert "Deleted Volumes" not in out  # a named volume is not pruned
    assert cli("volume", "prune", "-f", "-a").out.startswith("Deleted Volumes:\ndata\n")
    assert cli("volume", "ls", "-q").out == ""
    cli.fails("volume", "rm", "data", code=2)
    cli("volume", "rm", "-f", "data")


def test_bad_input_is_one_line_and_leaves_nothing(cli: Lamina, tmp_path: Path) -> None:  # noqa: F811
    for args in (["--mount", f"type=bind,source={tmp_path}/none,target=/x"], ["-v", "/tmp:rel"],
                 ["-v", "a/b:/x"], ["--tmpfs", "/t:nonsense"], ["--restart", "maybe"],
                 ["--security-opt", f"seccomp={tmp_path}/no.json"], ["--cap-add", "NOPE"],
                 ["--ulimit", "nofile=1:99999999999"], ["--health-interval", "soon"]):
        cli.fails("run", "--rm", *args, "bb:1", "true", code=5)
        cli.fails("create", *args, "bb:1", "true", code=5)
    cli.fails("volume", "create", "a/b", code=5)
    assert cli("ps", "-aq").out == "" and cli("volume", "ls", "-q").out == ""
    assert not (tmp_path / "none").exists()
