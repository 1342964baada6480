"""The Ray Job that `ncsweep submit` starts on the head node (sweeps/submit.py): the submitted
spec, carried in an environment variable, is written to a temporary file and run with
`ncsweep run SPEC --out DIR --address auto`.

    python -m sweeps.job DIR [--resources cpu=1,gpu=0.25]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from . import cli
from .submit import SPEC_ENV


def main(argv=None) -> int:
    """Inside the Ray Job: the submitted spec to a file, then `ncsweep run SPEC --out DIR --address auto`."""
    p = argparse.ArgumentParser(prog="python -m sweeps.job", description="(run by `ncsweep submit` on the head)")
    p.add_argument("out")
    p.add_argument("--resources")
    a = p.parse_args(argv)
    text = os.environ.get(SPEC_ENV)
    if not text:
        print(f"{SPEC_ENV} is not set: this module is the entrypoint `ncsweep submit` gives its Ray Job",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ncsweep-job-") as tmp:
        name = os.environ.get("NCSWEEP_SUBMITTED_NAME", "spec")
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(text)
        return cli.main(["run", str(path), "--out", a.out, "--address", "auto",
                         *(["--resources", a.resources] if a.resources else [])])


if __name__ == "__main__":
    sys.exit(main())
