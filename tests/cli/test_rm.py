"""``lamina rm``: containers go with their RW layers; mounted ones need -f."""

from __future__ import annotations

import json

from tests.cli.conftest import Lamina


def _df(lamina: Lamina) -> dict:
    return json.loads(lamina("system", "df", "--format", "json").out)


def test_rm_prints_names_and_removes(loaded: Lamina) -> None:
    layers = _df(loaded)["Layers"]["Total"]
    a = loaded("create", "--name", "a", "app:1.0").out.strip()
    loaded("create", "--name", "b", "app:1.0")
    assert loaded("rm", a[:12], "b").lines == [a[:12], "b"]
    assert json.loads(loaded("ps", "-a", "--format", "json").out) == []
    df = _df(loaded)
    assert df["Containers"]["Total"] == 0 and df["Layers"]["Total"] == layers  # image layers stay
    loaded.check_clean()


def test_rm_of_a_mounted_container_needs_force(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    loaded("mount", "c")
    r = loaded.fails("rm", "c", code=4)
    assert "mounted" in r.err
    assert len(json.loads(loaded("ps", "-a", "--format", "json").out)) == 1
    assert loaded("rm", "-f", "c").lines == ["c"]
    loaded.check_clean()


def test_rm_unknown_stops_with_one_line(loaded: Lamina) -> None:
    loaded("create", "--name", "c", "app:1.0")
    r = loaded("rm", "nosuch", "c", expect=2)
    assert r.err_lines == ["lamina: no such container: nosuch"] and r.out == ""
    assert len(json.loads(loaded("ps", "-a", "--format", "json").out)) == 1  # c was not touched
    loaded.check_clean()
