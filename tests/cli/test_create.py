"""``lamina create``: the container record holds the options as Docker's Config/HostConfig,
merged with the image's defaults; bad options and names are refused before anything is made."""

from __future__ import annotations

import json

from tests.cli.conftest import Archives, Lamina, clean_env


def _inspect(lamina: Lamina, name: str) -> dict:
    return json.loads(lamina("inspect", "--type", "container", name).out)[0]


def _containers(lamina: Lamina) -> int:
    return len(json.loads(lamina("ps", "-a", "--format", "json").out))


def test_create_prints_the_id_and_records_image_defaults(loaded: Lamina) -> None:
    cid = loaded("create", "app:1.0").out.strip()
    assert len(cid) == 64 and all(c in "0123456789abcdef" for c in cid)
    d = _inspect(loaded, cid)
    cfg = d["Config"]
    assert cfg["Cmd"] == ["/bin/sh"] and cfg["Entrypoint"] is None  # from the image
    assert cfg["Env"] == ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]
    assert cfg["WorkingDir"] == "/app"
    assert cfg["Labels"] == {"org.example.test": "yes"}
    assert d["HostConfig"] == {"NetworkMode": "none", "Memory": 0, "NanoCpus": 0, "PidsLimit": None,
                               "Runtime": None, "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}}
    assert d["Name"].startswith("/") and len(d["Name"]) > 1  # a generated name


def test_options_are_recorded_as_docker_fields(loaded: Lamina) -> None:
    env = clean_env(FROM_CALLER="copied")
    loaded("create", "--name", "opts", "-e", "A=1", "-e", "LANG=de_DE.UTF-8", "-e", "FROM_CALLER",
           "-e", "UNSET_IN_CALLER", "-w", "/srv", "-u", "1000:1000", "--entrypoint", "/bin/sh",
           "--hostname", "box", "--network", "host", "--memory", "512m", "--cpus", "1.5",
           "--pids-limit", "64", "app:1.0", "-c", "echo hi", env=env)
    d = _inspect(loaded, "opts")
    cfg = d["Config"]
    assert cfg["Env"] == ["A=1", "LANG=de_DE.UTF-8", "FROM_CALLER=copied", "PATH=/usr/bin:/bin"]
    assert cfg["WorkingDir"] == "/srv" and cfg["User"] == "1000:1000" and cfg["Hostname"] == "box"
    assert cfg["Entrypoint"] == ["/bin/sh"] and cfg["Cmd"] == ["-c", "echo hi"]
    assert d["Path"] == "/bin/sh" and d["Args"] == ["-c", "echo hi"]
    assert d["HostConfig"] == {"NetworkMode": "host", "Memory": 512 << 20, "NanoCpus": 1_500_000_000,
                               "PidsLimit": 64, "Runtime": None,
                               "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}}


def test_entrypoint_given_drops_the_image_command(loaded: Lamina) -> None:
    loaded("create", "--name", "ep", "--entrypoint", "/bin/true", "app:1.0")
    cfg = _inspect(loaded, "ep")["Config"]
    assert cfg["Entrypoint"] == ["/bin/true"] and cfg["Cmd"] is None
    loaded("create", "--name", "noep", "--entrypoint", "", "app:1.0")
    cfg = _inspect(loaded, "noep")["Config"]
    assert cfg["Entrypoint"] == [] and cfg["Cmd"] == ["/bin/sh"]


def test_everything_after_the_image_is_the_command(loaded: Lamina) -> None:
    loaded("create", "--name", "argv", "app:1.0", "ls", "-l", "--name", "x")
    assert _inspect(loaded, "argv")["Config"]["Cmd"] == ["ls", "-l", "--name", "x"]


def test_bad_options_are_refused_and_nothing_is_created(loaded: Lamina) -> None:
    for args, code in [
        (["--memory", "lots"], 5),
        (["--memory", "0"], 5),
        (["--cpus", "-1"], 5),
        (["--cpus", "many"], 5),
        (["-w", "relative/dir"], 5),
        (["--hostname", "bad host"], 5),
        (["-e", "=novalue"], 5),
        (["--name", "bad name!"], 5),
        (["--pids-limit", "-5"], 5),
    ]:
        loaded.fails("create", *args, "app:1.0", code=code)
    r = loaded.fails("create", "--network", "nosuch", "app:1.0", code=2)  # no such network
    assert "nosuch" in r.err
    loaded.fails("create", "--network", "bad name!", "app:1.0", code=5)
    loaded.fails("create", "-p", "80", "app:1.0", code=5)  # ports need a bridge network
    loaded.fails("create", "--network", "bridge", "-p", "1:2:3:4", "app:1.0", code=5)
    r = loaded("create", "--pids-limit", "abc", "app:1.0", expect=125)  # a usage error (argparse)
    assert r.err_lines[-1] == "See 'lamina create --help'."
    assert _containers(loaded) == 0
    loaded.check_clean()


def test_name_in_use(loaded: Lamina) -> None:
    loaded("create", "--name", "one", "app:1.0")
    r = loaded.fails("create", "--name", "one", "app:1.0", code=3)
    assert "one" in r.err
    assert _containers(loaded) == 1
    loaded.check_clean()


def test_unknown_image(loaded: Lamina) -> None:
    loaded.fails("create", "nosuch:1", code=2)
    loaded.fails("create", "NoSuch", code=2)
    assert _containers(loaded) == 0
    loaded.check_clean()


def test_create_by_image_id(loaded: Lamina, archives: Archives) -> None:
    loaded("create", "--name", "byid", archives.app.id.removeprefix("sha256:")[:12])
    assert _inspect(loaded, "byid")["Image"] == archives.app.id
