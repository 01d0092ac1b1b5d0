"""docker-py (the Python SDK) against ``lamina daemon``: ``docker.from_env()`` with DOCKER_HOST,
the high-level images and containers APIs, and the low-level ``APIClient`` for the same."""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonProc
from tests.registry import REGISTRY_BIN, Registry, run_registry

docker = pytest.importorskip("docker")


@pytest.fixture
def client(daemon: DaemonProc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator["docker.DockerClient"]:
    monkeypatch.setenv("DOCKER_HOST", daemon.host)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    c = docker.from_env(version="auto")
    try:
        yield c
    finally:
        c.close()


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_version_and_info(client: "docker.DockerClient") -> None:
    assert client.version()["ApiVersion"] == "1.45"
    assert client.api.api_version == "1.45"
    assert client.info()["Driver"] in ("overlay", "vfs")
    assert client.ping() is True


def test_images_list_get_tag_remove_save_load(client: "docker.DockerClient") -> None:
    img = client.images.get("bb:1")
    assert "bb:1" in img.tags and img.id.startswith("sha256:")
    ref = uniq("pytag")
    assert img.tag(ref, "7")
    assert f"{ref}:7" in [t for i in client.images.list() for t in i.tags]
    data = b"".join(client.images.get(f"{ref}:7").save(named=f"{ref}:7"))
    client.images.remove(f"{ref}:7")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(f"{ref}:7")
    loaded = client.images.load(data)
    assert [i.id for i in loaded] == [img.id]
    assert f"{ref}:7" in client.images.get(img.id).tags
    client.images.remove(f"{ref}:7")


def test_run_returns_output_and_raises_on_failure(client: "docker.DockerClient") -> None:
    assert client.containers.run("bb:1", ["echo", "from py"], remove=True) == b"from py\n"
    with pytest.raises(docker.errors.ContainerError) as e:
        client.containers.run("bb:1", ["sh", "-c", "echo bad >&2; exit 4"], remove=True, stderr=True)
    assert e.value.exit_status == 4


def test_container_lifecycle(client: "docker.DockerClient") -> None:
    name = uniq("py")
    c = client.containers.create("bb:1", ["sh", "-c", "echo hello; sleep 100"], name=name,
                                 labels={"k": "v"}, environment={"A": "1"})
    assert c.status == "created" and c.name == name
    c.start()
    c.reload()
    assert c.status == "running" and c.attrs["Config"]["Labels"]["k"] == "v"
    assert "A=1" in c.attrs["Config"]["Env"]
    assert [x.name for x in client.containers.list(filters={"label": "k=v"})] == [name]
    code, out = c.exec_run(["sh", "-c", "echo $A; exit 2"])
    assert (code, out) == (2, b"1\n")
    code, (out, err) = c.exec_run(["sh", "-c", "echo o; echo e >&2"], demux=True)
    assert (code, out, err) == (0, b"o\n", b"e\n")
    s = c.stats(stream=False)
    assert s["pids_stats"]["current"] >= 1 and s["memory_stats"]["usage"] > 0
    gen = c.stats(stream=True, decode=True)
    assert next(gen)["id"] == c.id
    gen.close()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        payload = b"put by docker-py\n"
        info = tarfile.TarInfo("put.txt")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    assert c.put_archive("/tmp", buf.getvalue())
    stream, st = c.get_archive("/tmp/put.txt")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tf:
        member = tf.extractfile("put.txt")
        assert member is not None and member.read() == b"put by docker-py\n"
    assert st["name"] == "put.txt" and st["size"] == len(payload)
    c.stop(timeout=1)
    assert c.wait()["StatusCode"] == 137
    assert c.logs() == b"hello\n"
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(name)


def test_low_level_api_client(daemon: DaemonProc) -> None:
    api = docker.APIClient(base_url=daemon.host, version="1.41")
    try:
        c = api.create_container("bb:1", ["sh", "-c", "echo low; exit 3"], name=uniq("api"))
        api.start(c["Id"])
        assert api.wait(c["Id"])["StatusCode"] == 3
        assert api.logs(c["Id"]) == b"low\n"
        assert api.inspect_container(c["Id"])["State"]["ExitCode"] == 3
        assert any(x["Id"] == c["Id"] for x in api.containers(all=True))
        api.remove_container(c["Id"])
        assert api.inspect_image("bb:1")["RepoTags"] == ["bb:1"]
        with pytest.raises(docker.errors.APIError) as e:
            api.inspect_container("no-such-one")
        assert e.value.status_code == 404
    finally:
        api.close()


@pytest.mark.skipif(not Path(REGISTRY_BIN).exists(), reason="docker-registry not installed")
def test_pull_and_push(client: "docker.DockerClient", tmp_path: Path) -> None:
    reg: Registry
    with run_registry(tmp_path / "reg") as reg:
        ref = f"{reg.host}/py/bb"
        client.images.get("bb:1").tag(ref, "1")
        out = client.images.push(ref, tag="1")
        assert "digest: sha256:" in out
        client.images.remove(f"{ref}:1")
        img = client.images.pull(ref, tag="1")
        assert f"{ref}:1" in img.tags
        client.images.remove(f"{ref}:1")
    assert os.path.exists(client.info()["DockerRootDir"])
