"""A short pass of the fuzzer (bench/fuzz.py) over a real chain, without and with CURVE keys:
every endpoint gets random and mutated messages, and afterwards every process must be alive, every
replica must hold exactly the preloaded data, and the chain must still serve. TESTING.md records
the long runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

FUZZ = Path(__file__).resolve().parent.parent / "bench" / "fuzz.py"


@pytest.mark.parametrize("mode", [[], ["--secure"]], ids=["plain", "curve"])
def test_a_short_fuzzing_pass_hurts_nothing(tmp_path, mode):
    result = subprocess.run([sys.executable, str(FUZZ), "--messages", "1500", "--seed", "11", "--dir",
                             str(tmp_path), *mode], capture_output=True, text=True, timeout=280)
    assert result.returncode == 0 and "verdict: PASS" in result.stdout, result.stdout[-4000:] + result.stderr[-4000:]
    assert "sent in" in result.stdout
