"""``python -m bench micro``: run every pytest-benchmark micro benchmark under ``bench/micro/``
and keep the results (raw timings included) in a results file, next to the macro results.

pytest-benchmark writes its JSON to a temporary file; ``results.merge_micro`` folds the
``benchmarks`` list into the suite (an existing results file gets them added, replacing earlier
runs of the same benchmarks; else a new file is made with the machine metadata).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import results as R

MICRO = Path(__file__).resolve().parent / "micro"


def run_micro(into: Path, *, keyword: str | None = None, extra: list[str] | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-micro-") as tmp:
        out = Path(tmp) / "micro.json"
        argv = [sys.executable, "-m", "pytest", str(MICRO), "-q", "-p", "no:cacheprovider",
                "--benchmark-only", f"--benchmark-json={out}", "-o", "testpaths=bench/micro",
                "--timeout=1800"]
        if keyword:
            argv += ["-k", keyword]
        argv += list(extra or [])
        print("bench micro: " + " ".join(argv[2:]), file=sys.stderr)
        rc = subprocess.run(argv, cwd=MICRO.parent.parent).returncode
        if not out.exists():
            print("bench micro: pytest wrote no benchmark results", file=sys.stderr)
            return rc or 1
        data = json.loads(out.read_text())
    if into.exists():
        suite = R.load(into)
    else:
        from bench.runner import machine_info, versions

        suite = R.Suite(label=into.stem, profile="micro")
        suite.machine = machine_info(into.parent)
        suite.versions = versions()
        suite.created = data.get("datetime", "")
    R.merge_micro(suite, data.get("benchmarks", []))
    suite.save(into)
    print(f"bench micro: {len(data.get('benchmarks', []))} benchmarks into {into}", file=sys.stderr)
    return rc
