"""The registry client's HTTP set-up stays cheap: no trio loaded with httpx (lamina uses the sync
client only) and no TLS context or CA bundle for a plain-HTTP registry (the TLS pool is made on
the first https request). Checked in a fresh interpreter and against the real registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.registry import REGISTRY_BIN, run_registry

_PROBE = """
import json, sys
from graph.distribution.registry import RegistryClient, RegistryOptions
host = sys.argv[1]
with RegistryClient(RegistryOptions(insecure=frozenset([host]))) as c:
    before = "trio" in sys.modules
    status = c.http.get(f"http://{host}/v2/").status_code
    tls_built = c.http._transport._tls is not None
import trio  # pyfuse3 still gets the real module afterwards
print(json.dumps({"trio_with_httpx": before, "status": status, "tls_built": tls_built,
                  "trio_real": hasattr(trio, "run")}))
"""


@pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="docker-registry is not installed")
def test_plain_http_client_loads_no_trio_and_builds_no_tls_pool(tmp_path: Path) -> None:
    with run_registry(tmp_path / "reg") as reg:
        p = subprocess.run([sys.executable, "-c", _PROBE, reg.host], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc == {"trio_with_httpx": False, "status": 200, "tls_built": False, "trio_real": True}
