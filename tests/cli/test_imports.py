"""Start-up stays light: ``lamina --help`` and ``lamina images`` never import the bench's
libraries (numpy, matplotlib), an HTTP client, or the native tar and compression libraries that
only load, pull and commit need; ``--help`` does not even import the store. Checked in a fresh
interpreter that runs the CLI's ``main`` and then reads ``sys.modules`` (a real check of what was
imported, not a timing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.cli.conftest import run_cmd

HEAVY = {"numpy", "matplotlib", "scipy", "pandas", "httpx", "httpcore", "h11", "h2", "anyio",
         "requests", "urllib3", "trio", "pyfuse3", "PIL", "pytest", "hypothesis"}
LAZY = {"libarchive", "zstandard", "isal", "xxhash"}

_PROBE = """
import json, sys
from lamina.cli.main import main
out = sys.argv[1]
try:
    rc = main(sys.argv[2:])
except SystemExit as e:  # --help exits through argparse
    rc = e.code
with open(out, "w") as f:
    json.dump({"rc": rc, "modules": sorted(sys.modules)}, f)
"""


# Not heavy, but costly at every start: ``ctypes.util.find_library`` runs ``ldconfig -p`` in a
# subprocess; subprocess and tempfile belong to commands that start programs or write archives.
NOT_ON_IMAGES = {"ctypes.util", "subprocess", "tempfile", "httpx", "ssl", "tarfile", "runtime"}
# ... and, once the root exists (no driver probe), nothing that costs milliseconds at every start
# that a listing does not use (issue 15): records without dataclasses (drivers.sys.record), syncs
# without ctypes until one is made, argparse's help width without shutil (lamina/cli/main.py), no
# ingest queue, platform, secrets or random
NOT_ON_LATER_IMAGES = NOT_ON_IMAGES | {"dataclasses", "inspect", "ast", "dis", "ctypes", "shutil", "queue",
                                       "platform", "secrets", "random", "graph.oci.formats"}
# ``lamina images`` builds its own parser only (lamina/cli/main.py's COMMAND_TABLE)
CLI_ON_IMAGES = {"lamina", "lamina.cli", "lamina.cli.main", "lamina.cli.common", "lamina.cli.images",
                 "lamina.cli.output", "lamina.config"}
# ... and opens the store for reading (graph.Store recover=False): rows only, no driver module, no
# container, volume or collector tables. Exact, so a module that joins the path fails here first.
STORE_ON_IMAGES = {
    "drivers", "drivers.base", "drivers.errors", "drivers.sys", "drivers.sys.durable", "drivers.sys.flock",
    "drivers.sys.proc", "drivers.sys.record",
    "graph", "graph.content", "graph.db", "graph.digest", "graph.errors", "graph.gc", "graph.images",
    "graph.layer_blobs", "graph.layers", "graph.leases", "graph.oci", "graph.oci.reference", "graph.references",
    "graph.store", "graph.verify",
}  # no graph.oci.formats: a listing reads the config's "created" only (ImageStore.created_text)
# Every module ``lamina images`` on an existing root adds to the interpreter's own start-up set (the
# standard library's included; the start-up set itself, from site, .pth files and the locale, differs
# from machine to machine: a fresh Debian tree had one more than a worked-on one, so it is
# subtracted): 61 here after issue 15's cuts. A module that joins the path, from anywhere, fails
# here (2 of slack for the locale's codecs); raise the bound only with the reason.
IMAGES_MODULES_MAX = 63


def _all_modules_after(tmp_path: Path, *args: str) -> set[str]:
    report = tmp_path / "modules.json"
    run_cmd([sys.executable, "-c", _PROBE, str(report), *args])
    doc = json.loads(report.read_text())
    assert doc["rc"] in (0, None), doc["rc"]
    return set(doc["modules"])


def _start_up_modules() -> set[str]:
    """The modules this interpreter has before any of lamina: what ``python -c`` loads (site, .pth
    hooks, codecs), plus the probe's own json."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", "import json, sys; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def _modules_after(tmp_path: Path, *args: str) -> set[str]:
    return {m.split(".")[0] for m in _all_modules_after(tmp_path, *args)}


def test_help_imports_no_library_at_all(tmp_path: Path) -> None:
    mods = _modules_after(tmp_path, "--help")
    assert not mods & HEAVY, mods & HEAVY
    assert not mods & LAZY, mods & LAZY
    assert "graph" not in mods and "drivers" not in mods and "sqlite3" not in mods


def test_images_imports_nothing_heavy(tmp_path: Path) -> None:
    mods = _modules_after(tmp_path, "--root", str(tmp_path / "root"), "--driver", "vfs", "images")
    assert "graph" in mods  # the probe did open a store
    assert not mods & HEAVY, mods & HEAVY
    assert not mods & LAZY, mods & LAZY


def test_images_imports_only_its_own_command_and_spawns_nothing(tmp_path: Path) -> None:
    for driver in ("vfs", "overlay"):
        mods = _all_modules_after(tmp_path, "--root", str(tmp_path / driver), "--driver", driver, "images")
        assert not mods & NOT_ON_IMAGES, (driver, mods & NOT_ON_IMAGES)
        assert {m for m in mods if m.split(".")[0] == "lamina"} == CLI_ON_IMAGES, driver


def test_images_on_an_existing_root_reads_rows_only(tmp_path: Path) -> None:
    """The first ``images`` on a new root probes and binds the driver (its module loads); every
    later one reads rows only: exactly ``STORE_ON_IMAGES`` of graph and drivers."""
    for driver in ("vfs", "overlay"):
        root = str(tmp_path / driver)
        _all_modules_after(tmp_path, "--root", root, "--driver", driver, "images")
        mods = _all_modules_after(tmp_path, "--root", root, "images")
        assert {m for m in mods if m.split(".")[0] in ("graph", "drivers")} == STORE_ON_IMAGES, driver
        assert not mods & NOT_ON_LATER_IMAGES, (driver, mods & NOT_ON_LATER_IMAGES)
        added = mods - _start_up_modules()
        assert len(added) <= IMAGES_MODULES_MAX, (driver, len(added), sorted(added))


def test_help_builds_no_command_module(tmp_path: Path) -> None:
    mods = _all_modules_after(tmp_path, "--help")
    assert {m for m in mods if m.startswith("lamina.cli.")} == {"lamina.cli.main"}


def test_ps_and_system_df_import_nothing_heavy(tmp_path: Path) -> None:
    for args in (["ps", "-a"], ["system", "df"]):
        mods = _modules_after(tmp_path, "--root", str(tmp_path / "root"), "--driver", "vfs", *args)
        assert not mods & HEAVY, (args, mods & HEAVY)
