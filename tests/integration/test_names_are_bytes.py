"""Names are bytes from every source, and a pull leaves no file open (issue 14 items 4 and 7).

A layer with two files whose names differ only in Unicode normalisation (``café`` NFC and NFD)
and a later layer whiting out the NFD one: only that one goes, on every driver and whether the
image came from a registry (pull), an OCI layout or a ``docker save`` tar. libarchive hands
UTF-8 names over NFC-normalised, which made both names one.
"""

from __future__ import annotations

import io
import os
import unicodedata
from pathlib import Path
from typing import Callable, Iterator

import pytest

import drivers
from graph import Store
from graph.archive import load_archive
from graph.distribution.pull import pull
from graph.distribution.registry import RegistryClient
from graph.digest import Digest
from graph.oci import formats
from tests.graph.test_archive import build, legacy_docker_tar, manifest_desc, sha, write_layout
from tests.integration.test_pull_push import opts
from tests.registry import REGISTRY_BIN, run_registry
from tests.drivers.ocimodel import E, layer_tar

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlay, fuse, btrfs loop)"),
]

NFC = unicodedata.normalize("NFC", "caf\u00e9").encode()
NFD = unicodedata.normalize("NFD", "caf\u00e9").encode()
assert NFC != NFD
TARS = [layer_tar([E("dir", b"d"), E("file", b"d/" + NFC, data=b"nfc"),
                   E("file", b"d/" + NFD, data=b"nfd"), E("symlink", b"d/l", target=NFD)]),
        layer_tar([E("whiteout", b"d/" + NFD)])]
IMAGE = build(TARS, "gzip")
WANT = {os.fsdecode(NFC): b"nfc", "l": None}


def _names(store: Store, image: str) -> dict[str, bytes | None]:
    c = store.create_container(image)
    try:
        root = store.containers.mount(c)
        try:
            d = Path(root, "d")
            out: dict[str, bytes | None] = {}
            for n in os.listdir(d):
                p = d / n
                out[n] = None if p.is_symlink() else p.read_bytes()
            assert os.readlink(d / "l") == os.fsdecode(NFD)
            return out
        finally:
            store.containers.unmount(c)
    finally:
        store.remove_container(c.id)


def _from_layout(tmp: Path, store: Store, _host: str) -> str:
    layout = write_layout(tmp / "layout", IMAGE.blobs, [manifest_desc(
        IMAGE, {"org.opencontainers.image.ref.name": "nfc"})])
    load_archive(store, layout)
    return IMAGE.image_id


def _from_docker_save(tmp: Path, store: Store, _host: str) -> str:
    load_archive(store, legacy_docker_tar(tmp / "save.tar", [(TARS, ["nfc:1"])]))
    return "nfc:1"


def _from_pull(tmp: Path, store: Store, host: str) -> str:
    with RegistryClient(opts(host)) as c:
        r = c.repository("nfc", c.origin(host), push=True)
        for b in [IMAGE.config, *IMAGE.layers]:
            r.upload_blob(Digest(sha(b)), len(b), lambda b=b: io.BytesIO(b))
        r.put_manifest("1", IMAGE.manifest, formats.MEDIA_OCI_MANIFEST)
    pull(store, f"{host}/nfc:1", options=opts(host))
    return f"{host}/nfc:1"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed")
    with run_registry(tmp_path_factory.mktemp("reg") / "reg") as reg:
        yield reg.host


def _store(tmp_path: Path, driver: str) -> Store:
    why = drivers.supported(driver, tmp_path / "probe")
    if why is not None:
        pytest.skip(f"{driver}: {why}")
    return Store(tmp_path / "root", driver=driver)


SOURCES: dict[str, Callable[[Path, Store, str], str]] = {
    "pull": _from_pull, "oci-layout": _from_layout, "docker-save": _from_docker_save}


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("driver", ["vfs", "overlay", "fuse"])
def test_a_whiteout_of_the_nfd_name_leaves_the_nfc_one(driver: str, source: str, tmp_path: Path,
                                                       registry: str) -> None:
    with _store(tmp_path, driver) as s:
        try:
            image = SOURCES[source](tmp_path, s, registry)
            assert _names(s, image) == WANT
        finally:
            s.driver.cleanup()


def _open_under(root: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root)) and not target.startswith(str(root / "lamina.db")):
            out.append(target)  # a blob, an ingest (deleted or not), a layer file
    return out


def test_pull_leaves_no_layer_spool_open(tmp_path: Path, registry: str) -> None:
    """Item 7: every layer's spool is closed when the pull ends (a deleted ingest file stayed
    on disk, held by the fd, while the process lived)."""
    with _store(tmp_path, "vfs") as s:
        try:
            image = _from_pull(tmp_path, s, registry)
            assert _open_under(s.root) == []
            assert s.resolve_image(image).id == IMAGE.image_id
        finally:
            s.driver.cleanup()
