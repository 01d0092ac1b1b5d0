"""Fixtures for the CLI tests: the real ``lamina`` program run in subprocesses against a temporary
root with the vfs driver, and small multi-layer images written in code as an OCI image layout
(a directory, or a tar of one) or a ``docker save`` tar.

The test image ``app`` has three layers:

1. (gzip) ``/bin/sh``, ``/etc/os-release`` ("lamina-test 1"), ``/usr/share/doc/readme``
2. (plain tar) ``/etc/os-release`` rewritten ("lamina-test 2"), ``/app/hello.txt``,
   a symlink ``/bin/hello -> /app/hello.txt``
3. (gzip) a whiteout of ``/usr/share/doc/readme`` and ``/app/data.bin`` (8 KiB)

so a correct load shows the second os-release, no readme, and all the other files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.tarbuild import E, make_tar

LAMINA_SCRIPT = Path(sys.executable).parent / "lamina"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def lamina_command() -> list[str]:
    """The installed console script when present (what users run), else ``python -m lamina``."""
    if LAMINA_SCRIPT.exists():
        return [str(LAMINA_SCRIPT)]
    return [sys.executable, "-m", "lamina"]


_PYCACHE: str | None = None  # set per session by the _bytecode_cache fixture


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without lamina's variables (a developer's LAMINA_ROOT must
    not leak into a test), plus ``extra``. Bytecode is cached in a session temp dir even where
    PYTHONDONTWRITEBYTECODE is set (as on the team's machines), so each of the hundreds of runs
    does not recompile the library, and the source tree gets no __pycache__ from the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
    if _PYCACHE is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = _PYCACHE
    env.update(extra)
    return env


@dataclass
class Result:
    args: list[str]
    rc: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


class Lamina:
    """Runs ``lamina --root ROOT --driver vfs ARGS...``; ``expect`` is the exit code the test wants
    (None: any), and a mismatch fails with the command's output in the message."""

    def __init__(self, root: Path, driver: str = "vfs") -> None:
        self.root = root
        self.driver = driver

    def __call__(self, *args: str, expect: int | None = 0, input: bytes | None = None,
                 env: dict[str, str] | None = None, timeout: float = 120) -> Result:
        cmd = lamina_command() + ["--root", str(self.root), "--driver", self.driver, *args]
        return run_cmd(cmd, expect=expect, input=input, env=env, timeout=timeout)

    def raw(self, *args: str, expect: int | None = 0, input: bytes | None = None) -> bytes:
        """stdout as bytes (export and save to a pipe)."""
        cmd = lamina_command() + ["--root", str(self.root), "--driver", self.driver, *args]
        p = subprocess.run(cmd, input=input, capture_output=True, env=clean_env(), timeout=120)
        if expect is not None:
            assert p.returncode == expect, f"{cmd}: rc {p.returncode}\n{p.stderr.decode()}"
        return p.stdout

    def fails(self, *args: str, code: int) -> Result:
        """Run a command that must fail with ``code`` and exactly one line on stderr, nothing on
        stdout, and no traceback."""
        r = self(*args, expect=code)
        assert len(r.err_lines) == 1, f"want one stderr line, got:\n{r.err}"
        assert r.err.startswith("lamina: "), r.err
        assert "Traceback" not in r.err
        assert r.out == "", r.out
        return r

    def check_clean(self) -> None:
        """``system check`` finds nothing wrong."""
        r = self("system", "check")
        assert r.out.strip() == "ok", r.out + r.err


def run_cmd(cmd: Sequence[str], *, expect: int | None = 0, input: bytes | None = None,
            env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    p = subprocess.run(list(cmd), input=input, capture_output=True, env=env if env is not None else clean_env(),
                       timeout=timeout)
    r = Result(list(cmd), p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
    if expect is not None:
        assert r.rc == expect, f"{' '.join(cmd)}: exit {r.rc}, want {expect}\nstdout:\n{r.out}\nstderr:\n{r.err}"
    return r


# ---- images built in code ----------------------------------------------------------------------
def host_arch() -> str:
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(m, m)


def sha256(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


@dataclass
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return sha256(self.data)

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


@dataclass
class TestImage:
    """An image as an archive carries it: layer blobs, config, manifest."""

    __test__ = False  # not a test class, whatever its name

    layers: list[Blob]
    diff_ids: list[str]
    config: Blob
    manifest: Blob
    tars: list[bytes] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.config.digest


def gz(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(data)
    return buf.getvalue()


def build_image(layers: Sequence[Sequence[E]], *, gzip_layers: Sequence[int] = (),
                cmd: Sequence[str] = ("/bin/sh",), env: Sequence[str] = (),
                workdir: str = "", created: str = "2024-01-02T03:04:05Z",
                arch: str | None = None, labels: dict[str, str] | None = None,
                extra_config: dict[str, object] | None = None) -> TestImage:
    tars = [make_tar(list(entries)) for entries in layers]
    blobs = [Blob(MEDIA_LAYER_GZIP, gz(t)) if i in gzip_layers else Blob(MEDIA_LAYER, t) for i, t in enumerate(tars)]
    diff_ids = [sha256(t) for t in tars]
    runtime: dict[str, object] = {"Env": list(env) or ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": list(cmd)}
    if workdir:
        runtime["WorkingDir"] = workdir
    if labels:
        runtime["Labels"] = labels
    runtime.update(extra_config or {})
    config = {
        "architecture": arch or host_arch(),
        "os": "linux",
        "created": created,
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": f"layer {i}"} for i in range(len(tars))],
    }
    cfg = Blob(MEDIA_CONFIG, json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": cfg.descriptor(),
        "layers": [b.descriptor() for b in blobs],
    }
    man = Blob(MEDIA_MANIFEST, json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    return TestImage(blobs, diff_ids, cfg, man, tars)


APP_LAYERS: list[list[E]] = [
    [
        E("bin", kind="dir"), E("bin/sh", b"#!fake shell\n", mode=0o755),
        E("etc", kind="dir"), E("etc/os-release", b"lamina-test 1\n"),
        E("usr", kind="dir"), E("usr/share", kind="dir"), E("usr/share/doc", kind="dir"),
        E("usr/share/doc/readme", b"read me\n"),
    ],
    [
        E("etc/os-release", b"lamina-test 2\n"),
        E("app", kind="dir"), E("app/hello.txt", b"hello\n"),
        E("bin/hello", kind="symlink", target="/app/hello.txt"),
    ],
    [
        E("usr/share/doc/readme", kind="whiteout"),
        E("app/data.bin", bytes(range(256)) * 32),
    ],
]


def app_image(**kw: object) -> TestImage:
    """The three-layer test image (see the module docstring)."""
    return build_image(APP_LAYERS, gzip_layers=(0, 2), env=["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
                       workdir="/app", labels={"org.example.test": "yes"}, **kw)  # type: ignore[arg-type]


def small_image(tag_text: bytes = b"small\n") -> TestImage:
    """A one-layer image (shares nothing with ``app``)."""
    return build_image([[E("small.txt", tag_text)]], cmd=("/small",))


def write_oci_layout(path: Path, images: Sequence[tuple[TestImage, str | None]]) -> Path:
    """An OCI image layout directory with one index entry per image; a name (``app:1.0``) goes in
    ``org.opencontainers.image.ref.name`` as the tag and in ``io.containerd.image.name`` as the
    full reference, which is how containerd and Docker write layouts."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    manifests = []
    for img, name in images:
        for b in [*img.layers, img.config, img.manifest]:
            (blobs / b.digest.removeprefix("sha256:")).write_bytes(b.data)
        ann: dict[str, str] = {}
        if name:
            ann = {"io.containerd.image.name": _full_name(name),
                   "org.opencontainers.image.ref.name": name.rpartition(":")[2]}
        manifests.append(img.manifest.descriptor(**({"annotations": ann} if ann else {})))
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": MEDIA_INDEX,
                                                 "manifests": manifests}))
    return path


def _full_name(name: str) -> str:
    repo, _, tag = name.rpartition(":")
    if "/" not in repo:
        repo = "library/" + repo
    if "." not in repo.split("/")[0] and ":" not in repo.split("/")[0] and repo.split("/")[0] != "localhost":
        repo = "docker.io/" + repo
    return f"{repo}:{tag}"


def tar_directory(src: Path, out: Path) -> Path:
    with tarfile.open(out, "w") as tf:
        for p in sorted(src.rglob("*")):
            tf.add(p, arcname=str(p.relative_to(src)), recursive=False)
    return out


def write_docker_archive(out: Path, images: Sequence[tuple[TestImage, Sequence[str]]]) -> Path:
    """A ``docker save`` tar: ``manifest.json`` listing config and layer files with RepoTags."""
    entries: dict[str, bytes] = {}
    manifest = []
    for img, tags in images:
        cfg_name = img.id.removeprefix("sha256:") + ".json"
        entries[cfg_name] = img.config.data
        layer_names = []
        for diff_id, tar_bytes in zip(img.diff_ids, img.tars):
            name = diff_id.removeprefix("sha256:") + "/layer.tar"
            entries[name] = tar_bytes
            layer_names.append(name)
        manifest.append({"Config": cfg_name, "RepoTags": list(tags), "Layers": layer_names})
    entries["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(out, "w") as tf:
        for name, data in entries.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            tf.addfile(ti, io.BytesIO(data))
    return out


# ---- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def _bytecode_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    global _PYCACHE
    _PYCACHE = str(tmp_path_factory.mktemp("pycache"))
    try:
        yield
    finally:
        _PYCACHE = None


@dataclass
class Archives:
    app: TestImage
    small: TestImage
    oci_dir: Path       # app as app:1.0
    oci_tar: Path       # the same layout, tarred
    docker_tar: Path    # app as app:1.0 and app:latest, small as small:1
    multi_dir: Path     # app:1.0 and small:1 in one layout


@pytest.fixture(scope="session")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Archives:
    d = tmp_path_factory.mktemp("archives")
    app, small = app_image(), small_image()
    oci_dir = write_oci_layout(d / "app-oci", [(app, "app:1.0")])
    return Archives(
        app=app,
        small=small,
        oci_dir=oci_dir,
        oci_tar=tar_directory(oci_dir, d / "app-oci.tar"),
        docker_tar=write_docker_archive(d / "docker.tar", [(app, ["app:1.0", "app:latest"]), (small, ["small:1"])]),
        multi_dir=write_oci_layout(d / "multi-oci", [(app, "app:1.0"), (small, "small:1")]),
    )


@pytest.fixture
def lamina(tmp_path: Path) -> Iterator[Lamina]:
    """A CLI bound to an empty root in this test's tmp dir. Afterwards the driver releases
    whatever the test left mounted (vfs mounts nothing in the kernel; other drivers would)."""
    cli = Lamina(tmp_path / "root")
    try:
        yield cli
    finally:
        if (cli.root / "lamina.db").exists():
            from graph import Store

            with Store(cli.root) as store:
                store.driver.cleanup()


@pytest.fixture
def loaded(lamina: Lamina, archives: Archives) -> Lamina:
    """A root with ``app:1.0`` loaded from the OCI layout."""
    lamina("load", "-i", str(archives.oci_dir))
    return lamina
