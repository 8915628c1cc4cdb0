"""``python tests/bad_input/count.py``: run the bad-input catalogue and print ``{"bad_inputs_refused": N}``,
N being the bad-input cases (tests marked ``bad_input``) that passed: each a bad value refused with an
error naming its field, the lake unchanged. ``make chaos`` takes the figure from here. Exit status: 0
when every case passed, 1 otherwise (the line is printed either way)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def bad_inputs_refused(python: str = sys.executable) -> tuple[int, int]:
    """(cases passed, cases run) of ``pytest tests/bad_input -m bad_input``."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "bad_input.xml"
        subprocess.run(
            [
                python,
                "-m",
                "pytest",
                "tests/bad_input",
                "-m",
                "bad_input",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={report}",
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        cases = ET.parse(report).getroot().iter("testcase")
        outcomes = [not any(child.tag in ("failure", "error", "skipped") for child in case) for case in cases]
    return sum(outcomes), len(outcomes)


FIGURES = REPO_ROOT / ".local" / "chaos" / "bad_inputs.json"  # read by make chaos


def main() -> int:
    passed, run = bad_inputs_refused()
    line = json.dumps({"bad_inputs_refused": passed, "bad_inputs_tried": run})
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(line + "\n")
    print(line)
    return 0 if run and passed == run else 1


if __name__ == "__main__":
    sys.exit(main())
