"""``lamina ps``: containers, newest first; without -a only running ones (none run yet)."""

from __future__ import annotations

import json

from tests.cli.conftest import Archives, Lamina

HEADER = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"]


def test_ps_without_all_lists_no_created_containers(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    r = loaded("ps")
    assert len(r.lines) == 1 and r.lines[0].startswith("CONTAINER ID   IMAGE")
    assert json.loads(loaded("ps", "--format", "json").out) == []


def test_ps_all_table(loaded: Lamina) -> None:
    cid = loaded("create", "--name", "first", "app:1.0").out.strip()
    loaded("create", "--name", "second", "app:1.0", "sh", "-c", "echo a long command line here")
    r = loaded("ps", "-a")
    header, newest, oldest = r.lines
    starts = [header.index(h) for h in HEADER]
    cells = [oldest[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
    assert cells[0] == cid[:12] and cells[1] == "app:1.0" and cells[2] == '"/bin/sh"'
    assert cells[3].endswith("ago") and cells[4] == "Created" and cells[5] == "first"
    assert newest.rstrip().endswith("second")
    assert '"sh -c \'echo a long …"' in newest  # cut to 20 characters, like docker


def test_ps_json_and_quiet(loaded: Lamina, archives: Archives) -> None:
    cid = loaded("create", "--name", "c", "app:1.0", "echo", "hi there").out.strip()
    rows = json.loads(loaded("ps", "-a", "--format", "json").out)
    assert rows == [{
        "ID": cid, "Name": "c", "Image": "app:1.0", "ImageID": archives.app.id,
        "Command": "echo 'hi there'", "Created": rows[0]["Created"], "State": "created", "Status": "Created",
    }]
    assert rows[0]["Created"].endswith("Z")
    assert loaded("ps", "-aq").lines == [cid[:12]]
    assert loaded("ps", "-aq", "--no-trunc").lines == [cid]
