"""Benchmarks, run by `storypush bench` and `python -m benchmarks.<name>`.

They reuse the push-service simulator and test helpers in `tests/`, which is not part of
the installed distribution: the source checkout this package comes from goes on
`sys.path` here, so the console script works from any directory, not only the repo root.
"""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if not (REPO_ROOT / "tests" / "pushsim").is_dir():
    raise ImportError(f"storypush benchmarks need the source checkout (tests/ next to {Path(__file__).parent})")
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
