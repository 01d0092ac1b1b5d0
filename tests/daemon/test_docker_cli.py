"""The stock docker CLI against ``lamina daemon``: every command of the session the daemon must
serve, with each docker client installed (28 negotiates down to API 1.45, Debian's 20.10 speaks
1.41). Where Docker defines the output or the exit code, these tests hold lamina to it."""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from pathlib import Path

from tests.daemon.conftest import DockerCLI


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_version_and_info(docker: DockerCLI) -> None:
    v = docker("version", "--format", "{{.Server.APIVersion}} {{.Server.MinAPIVersion}} {{.Server.Os}}")
    assert v.out.split() == ["1.45", "1.41", "linux"]
    info = docker("info", "--format", "{{.Driver}} {{.LoggingDriver}} {{.Images}}")
    driver, logging_driver, images = info.out.split()
    assert driver == docker.d.driver and logging_driver == "json-file" and int(images) >= 1


def test_run_attached_streams_output_and_returns_the_exit_code(docker: DockerCLI) -> None:
    name = uniq("att")
    r = docker("run", "--name", name, "bb:1", "sh", "-c", "echo out; echo err >&2; exit 3", expect=3)
    assert r.out == "out\n"
    assert "err\n" in r.err
    assert docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name).out.strip() == "exited 3"
    docker("rm", name)


def test_run_rm_removes_the_container_and_keeps_the_exit_code(docker: DockerCLI) -> None:
    name = uniq("rm")
    r = docker("run", "--rm", "--name", name, "bb:1", "sh", "-c", "echo gone; exit 5", expect=5)
    assert r.out == "gone\n"
    assert name not in docker("ps", "-a", "--format", "{{.Names}}").out.split()


def test_unknown_image_is_a_404_and_exit_125(docker: DockerCLI) -> None:
    r = docker("create", "127.0.0.1:1/nothing-here:1", expect=None)
    assert r.rc != 0
    r = docker("inspect", "--type", "container", "no-such-container-x", expect=1)
    assert "no such" in r.err.lower()


def test_create_start_ps_filter_format_logs(docker: DockerCLI) -> None:
    name = uniq("cs")
    cid = docker("create", "--name", name, "--label", "team=lamina", "bb:1",
                 "sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; sleep 100").out.strip()
    assert len(cid) == 64
    assert docker("ps", "-a", "--filter", f"name={name}", "--format", "{{.Status}}").out.strip() == "Created"
    docker("start", name)
    assert docker("ps", "--filter", "label=team=lamina", "--filter", "status=running",
                  "--format", "{{.ID}} {{.Names}}").out.split() == [cid[:12], name]
    deadline = time.monotonic() + 10
    while "line5" not in docker("logs", name).out and time.monotonic() < deadline:
        time.sleep(0.05)
    assert docker("logs", "--tail", "2", name).out == "line4\nline5\n"
    p = docker.popen("logs", "-f", "--tail", "1", name)
    time.sleep(0.5)
    assert p.poll() is None, "logs -f ended while the container runs"
    docker("kill", name)
    out, _ = p.communicate(timeout=20)
    assert out == b"line5\n" and p.returncode == 0
    assert docker("inspect", "--format", "{{.State.Status}}", name).out.strip() == "exited"
    assert docker("ps", "-a", "--filter", "exited=137", "--format", "{{.Names}}").out.split() == [name]
    docker("rm", name)


def test_run_detached_stop_kill_pause_unpause_inspect(docker: DockerCLI) -> None:
    name = uniq("life")
    docker("run", "-d", "--name", name, "bb:1", "sleep", "100")
    fmt = "{{.State.Status}}"
    assert docker("inspect", "--format", fmt, name).out.strip() == "running"
    docker("pause", name)
    assert docker("inspect", "--format", fmt, name).out.strip() == "paused"
    assert "(Paused)" in docker("ps", "--filter", f"name={name}", "--format", "{{.Status}}").out
    docker("unpause", name)
    assert docker("inspect", "--format", fmt, name).out.strip() == "running"
    docker("stop", "-t", "1", name)
    assert docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name).out.strip() == "exited 137"
    docker("start", name)
    docker("kill", "-s", "TERM", name)  # sleep as init ignores TERM: still running
    time.sleep(0.3)
    assert docker("inspect", "--format", fmt, name).out.strip() == "running"
    docker("kill", name)
    r = docker("kill", name, expect=1)
    assert "not running" in r.err
    docker("restart", "-t", "0", name)
    assert docker("inspect", "--format", fmt, name).out.strip() == "running"
    docker("rename", name, name + "-new")
    docker("rm", "-f", name + "-new")
    assert name + "-new" not in docker("ps", "-a", "--format", "{{.Names}}").out.split()


def test_rm_of_a_running_container_needs_force(docker: DockerCLI) -> None:
    name = uniq("rmf")
    docker("run", "-d", "--name", name, "bb:1", "sleep", "100")
    r = docker("rm", name, expect=1)
    assert "Error response from daemon" in r.err
    docker("rm", "-f", name)


def test_exec_output_and_exit_code(docker: DockerCLI) -> None:
    name = uniq("ex")
    docker("run", "-d", "--name", name, "bb:1", "sleep", "100")
    r = docker("exec", "-e", "X=42", "-w", "/tmp", name, "sh", "-c", 'echo "$X $(pwd)"; echo e >&2; exit 7', expect=7)
    assert r.out == "42 /tmp\n" and "e\n" in r.err
    r = docker("exec", name, "/no/such/program", expect=None)
    assert r.rc in (126, 127)
    docker("rm", "-f", name)


def test_cp_both_ways_diff_commit_export(docker: DockerCLI, tmp_path: Path) -> None:
    name = uniq("cp")
    docker("run", "-d", "--name", name, "bb:1", "sleep", "100")
    src = tmp_path / "in.txt"
    src.write_text("from the host\n")
    docker("cp", str(src), f"{name}:/tmp/")
    assert docker("exec", name, "cat", "/tmp/in.txt").out == "from the host\n"
    d = tmp_path / "tree"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("deep\n")
    docker("cp", str(d), f"{name}:/tmp/tree")
    assert docker("exec", name, "cat", "/tmp/tree/sub/f").out == "deep\n"
    docker("exec", name, "sh", "-c", "echo made inside > /root/out.txt")
    docker("cp", f"{name}:/root/out.txt", str(tmp_path / "out.txt"))
    assert (tmp_path / "out.txt").read_text() == "made inside\n"
    docker("cp", f"{name}:/etc", str(tmp_path / "etc-copy"))
    assert (tmp_path / "etc-copy" / "passwd").read_text().startswith("root:x:0:0")
    r = docker("cp", f"{name}:/nope", str(tmp_path / "x"), expect=1)
    assert "Could not find the file" in r.err or "No such" in r.err
    changes = docker("diff", name).out.splitlines()
    assert "A /tmp/in.txt" in changes and "A /root/out.txt" in changes
    ref = uniq("committed") + ":1"
    iid = docker("commit", "--change", "CMD [\"cat\", \"/root/out.txt\"]", name, ref).out.strip()
    assert iid.startswith("sha256:")
    assert docker("run", "--rm", ref).out == "made inside\n"
    exported = docker.popen("export", name)
    data, _ = exported.communicate(timeout=60)
    assert exported.returncode == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = set(tf.getnames())
    assert "root/out.txt" in names and "bin/busybox" in names
    docker("rm", "-f", name)
    docker("rmi", ref)


def test_tag_rmi_save_load(docker: DockerCLI, tmp_path: Path) -> None:
    ref = uniq("saved") + ":2"
    docker("tag", "bb:1", ref)
    assert ref in docker("images", "--format", "{{.Repository}}:{{.Tag}}").out.split()
    out = tmp_path / "img.tar"
    docker("save", "-o", str(out), ref)
    with tarfile.open(out) as tf:
        assert "manifest.json" in tf.getnames()
    r = docker("rmi", ref)
    assert f"Untagged: {ref}" in r.out
    assert ref not in docker("images", "--format", "{{.Repository}}:{{.Tag}}").out.split()
    r = docker("load", "-i", str(out))
    assert f"Loaded image: {ref}" in r.out
    assert docker("inspect", "--format", "{{.Id}}", ref).out.strip() == \
        docker("inspect", "--format", "{{.Id}}", "bb:1").out.strip()
    docker("rmi", ref)
    assert docker("rmi", "no-such-image:1", expect=1).err


def test_stats_top_system_df(docker: DockerCLI) -> None:
    name = uniq("st")
    docker("run", "-d", "--name", name, "bb:1", "sleep", "100")
    r = docker("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", name)
    assert r.out.split() == [name, "1"]
    top = docker("top", name).out
    assert "sleep 100" in top
    df = docker("system", "df", "--format", "{{.Type}} {{.TotalCount}}").out.splitlines()
    counts = dict(line.rsplit(" ", 1) for line in df)
    assert int(counts["Images"]) >= 1 and int(counts["Containers"]) >= 1
    docker("rm", "-f", name)


def test_events_since_until(docker: DockerCLI) -> None:
    since = str(int(time.time()) - 1)
    name = uniq("ev")
    docker("run", "--rm", "--name", name, "bb:1", "true")
    until = str(int(time.time()) + 1)
    r = docker("events", "--since", since, "--until", until, "--filter", "type=container",
               "--format", "{{json .}}", timeout=30)
    evs = [json.loads(line) for line in r.out.splitlines()]
    mine = [e["Action"] for e in evs if e["Actor"]["Attributes"].get("name") == name or
            any(e["Actor"]["ID"] == x["Actor"]["ID"] for x in evs if x["Actor"]["Attributes"].get("name") == name)]
    assert "create" in mine and "start" in mine and "die" in mine


def test_cli_and_daemon_share_the_store(docker: DockerCLI) -> None:
    from tests.daemon.conftest import lamina_on

    d = docker.d
    name = uniq("shared")
    lamina_on(d.root, d.driver, "run", "-d", "--name", name, "bb:1", "sleep", "100")
    assert docker("inspect", "--format", "{{.State.Status}}", name).out.strip() == "running"
    docker("stop", "-t", "0", name)
    r = lamina_on(d.root, d.driver, "ps", "-a", "--format", "json")
    rows = {row["Name"]: row for row in json.loads(r.out)}
    assert rows[name]["State"] == "exited"
    name2 = uniq("shared")
    docker("create", "--name", name2, "bb:1", "true")
    lamina_on(d.root, d.driver, "rm", name2)
    lamina_on(d.root, d.driver, "rm", name)
    assert not {name, name2} & set(docker("ps", "-a", "--format", "{{.Names}}").out.split())


def test_run_and_exec_with_stdin(docker: DockerCLI) -> None:
    r = docker("run", "-i", "--rm", "bb:1", "sh", "-c", "wc -l; exit 2", input=b"a\nb\nc\n", expect=2)
    assert r.out.strip() == "3"
    name = uniq("in")
    docker("run", "-d", "--name", name, "bb:1", "sleep", "100")
    assert docker("exec", "-i", name, "cat", input=b"through exec\n").out == "through exec\n"
    assert docker("run", "--rm", "bb:1", "cat", input=b"not attached\n").out == ""  # no -i: stdin is /dev/null
    docker("rm", "-f", name)


def test_networks_listed_and_system_prune(docker: DockerCLI) -> None:
    # read-only network calls only: a test makes no bridge on the host
    names = docker("network", "ls", "--format", "{{.Name}} {{.Driver}}").out.splitlines()
    assert "none null" in names and "host host" in names
    assert docker("network", "inspect", "--format", "{{.Name}}", "none").out.strip() == "none"
    assert docker("network", "inspect", "no-such-net", expect=1).err
    stopped = uniq("pruned")
    docker("create", "--name", stopped, "bb:1", "true")
    r = docker("system", "prune", "-f")
    assert "Total reclaimed space" in r.out
    assert stopped not in docker("ps", "-a", "--format", "{{.Names}}").out.split()
    assert "bb:1" in docker("images", "--format", "{{.Repository}}:{{.Tag}}").out.split()
