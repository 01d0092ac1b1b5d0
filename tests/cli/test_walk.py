"""The user's path from the README, end to end through the real program, and the same session
fed bad input: every step checks what a user would look at."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from tests.cli.conftest import Archives, Lamina


def test_readme_session(lamina: Lamina, archives: Archives, tmp_path: Path) -> None:
    app_short = archives.app.id.removeprefix("sha256:")[:12]

    # load -> images
    assert lamina("load", "-i", str(archives.oci_tar)).lines == ["Loaded image: app:1.0"]
    images = lamina("images").lines
    assert images[0].split()[:2] == ["REPOSITORY", "TAG"] and images[1].split()[:3] == ["app", "1.0", app_short]

    # tag
    lamina("tag", "app:1.0", "localhost:5000/demo/app:stable")
    assert len(lamina("images").lines) == 3

    # create -> mount -> the rootfs is the image's
    cid = lamina("create", "--name", "c1", "-e", "MODE=demo", "localhost:5000/demo/app:stable").out.strip()
    root = Path(lamina("mount", "c1").out.strip())
    assert (root / "etc/os-release").read_text() == "lamina-test 2\n"
    assert not (root / "usr/share/doc/readme").exists()

    # write into the mount -> diff shows it
    (root / "app/result.txt").write_text("written through the mount\n")
    (root / "bin/sh").unlink()
    assert lamina("diff", "c1").lines == ["C /app", "A /app/result.txt", "C /bin", "D /bin/sh"]
    assert lamina("umount", "c1").lines == [cid]

    # commit -> images shows the new image
    new_id = lamina("commit", "-m", "demo result", "c1", "demo:2").out.strip()
    rows = json.loads(lamina("images", "--format", "json").out)
    assert ("demo", "2", new_id) in {(r["Repository"], r["Tag"], r["ID"]) for r in rows}
    history_doc = json.loads(lamina("inspect", "demo:2").out)[0]
    assert len(history_doc["RootFS"]["Layers"]) == 4

    # export
    out = tmp_path / "c1.tar"
    lamina("export", "c1", "-o", str(out))
    with tarfile.open(out) as tf:
        assert tf.extractfile("app/result.txt").read() == b"written through the mount\n"  # type: ignore[union-attr]
        assert "bin/sh" not in tf.getnames()

    # the committed image carries the change into a new container
    lamina("create", "--name", "c2", "demo:2")
    exported = lamina.raw("export", "c2")
    with tarfile.open(fileobj=io.BytesIO(exported)) as tf:
        assert "app/result.txt" in tf.getnames() and "bin/sh" not in tf.getnames()

    # ps shows both; rm; rmi
    assert {r["Name"] for r in json.loads(lamina("ps", "-a", "--format", "json").out)} == {"c1", "c2"}
    assert lamina("rm", "c1", "c2").lines == ["c1", "c2"]
    assert lamina("ps", "-aq").out == ""
    lamina("rmi", "demo:2")
    assert lamina("rmi", "app:1.0").lines == ["Untagged: app:1.0"]  # still named localhost:5000/...
    lamina("rmi", "localhost:5000/demo/app:stable")

    # system df / prune / check: empty and healthy
    df = json.loads(lamina("system", "df", "--format", "json").out)
    assert (df["Images"]["Total"], df["Containers"]["Total"], df["Layers"]["Total"], df["Blobs"]["Total"]) == (0, 0, 0, 0)
    assert lamina("system", "prune", "-f").lines == ["Total reclaimed space: 0B"]
    lamina.check_clean()
    assert list((lamina.root / "drivers/vfs/dir").iterdir()) == []
    assert list((lamina.root / "blobs/sha256").iterdir()) == []


def test_bad_input_session(lamina: Lamina, archives: Archives, tmp_path: Path) -> None:
    """Each mistake: one line on stderr, a non-zero exit, and a store that is still healthy."""
    lamina("load", "-i", str(archives.docker_tar))
    lamina("create", "--name", "busy", "app:1.0")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not an archive" * 100)

    mistakes = [
        (["load", "-i", str(tmp_path / "missing.tar")], 2),   # missing file
        (["load", "-i", str(junk)], 5),                       # invalid archive
        (["create", "nosuch:1"], 2),                          # unknown image
        (["inspect", "nosuch"], 2),
        (["mount", "nosuch"], 2),                             # unknown container
        (["diff", "nosuch"], 2),
        (["rm", "nosuch"], 2),
        (["tag", "app:1.0", "App:Upper"], 5),                 # bad reference
        (["commit", "busy", "Bad:Ref"], 5),
        (["rmi", "app:1.0"], 4),                              # in use without -f (app:latest untags first)
    ]
    lamina("rmi", "app:latest")  # so that app:1.0 is the image's last name
    for args, code in mistakes:
        r = lamina.fails(*args, code=code)
        assert "\n" not in r.err.rstrip("\n")
        lamina.check_clean()

    rows = json.loads(lamina("images", "--format", "json").out)
    assert {(r["Repository"], r["Tag"]) for r in rows} == {("app", "1.0"), ("small", "1")}
    assert [r["Name"] for r in json.loads(lamina("ps", "-a", "--format", "json").out)] == ["busy"]
