"""The systemd units in deploy/systemd pass ``systemd-analyze verify`` without a single warning."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

UNIT_DIR = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
INSTALLED_BINARY = "/opt/zcraq/venv/bin/zcraq"
COORDINATOR_UNIT = "zcraq-coordinator.service"
NODE_TEMPLATE = "zcraq-node@.service"
NODE_INSTANCE = "zcraq-node@node1.service"

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not on PATH")


def _zcraq_binary(tmp: Path) -> Path:
    """An executable to stand in for /opt/zcraq/venv/bin/zcraq.

    ``verify`` fails a unit whose ExecStart binary does not exist, and /opt/zcraq is not there on a
    development machine. It never runs the binary, so the environment's own ``zcraq`` console
    script does, and when the package is not installed (tests run from a source tree) any
    executable file is just as good.
    """
    script = Path(sys.executable).parent / "zcraq"
    if script.is_file() and os.access(script, os.X_OK):
        return script
    stand_in = tmp / "bin" / "zcraq"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    return stand_in


def _install(tmp: Path, replace: tuple[str, str] = ("", "")) -> dict[str, Path]:
    """Copy the units into ``tmp`` with a local binary, the template under an instance name."""
    binary = str(_zcraq_binary(tmp))
    units = tmp / "units"
    units.mkdir()
    paths = {}
    for source, name in ((COORDINATOR_UNIT, COORDINATOR_UNIT), (NODE_TEMPLATE, NODE_INSTANCE)):
        text = (UNIT_DIR / source).read_text()
        assert INSTALLED_BINARY in text
        paths[name] = units / name
        if replace[0]:
            text = text.replace(*replace)
        paths[name].write_text(text.replace(INSTALLED_BINARY, binary))
    return paths


def _verify(units: list[Path]) -> tuple[int, list[str]]:
    """Run verify; return its exit code and the output lines about our units.

    systemd-analyze sometimes warns about unrelated units installed on the host; only lines naming
    one of our files count.
    """
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=units[0].parent,
    )
    names = ("zcraq-coordinator", "zcraq-node@")
    lines = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in lines if any(n in line for n in names)]


@needs_analyze
@pytest.mark.parametrize("unit", [COORDINATOR_UNIT, NODE_INSTANCE])
def test_unit_verifies_cleanly(tmp_path: Path, unit: str) -> None:
    paths = _install(tmp_path)
    # The coordinator is verified along with the node because the node unit names it.
    code, ours = _verify([paths[unit]] if unit == COORDINATOR_UNIT else list(paths.values()))
    assert ours == []
    assert code == 0


@needs_analyze
def test_verify_does_report_mistakes(tmp_path: Path) -> None:
    """Guards the test above: a broken directive must surface, or 'clean' would mean nothing."""
    paths = _install(tmp_path, replace=("ProtectSystem=strict", "ProtectSystem=very-strict"))
    code, ours = _verify([paths[COORDINATOR_UNIT]])
    assert any("protect system value" in line for line in ours), ours


def _directives(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (UNIT_DIR / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_units_run_the_installed_cli() -> None:
    assert _directives(COORDINATOR_UNIT)["ExecStart"] == [
        f"{INSTALLED_BINARY} coordinator --config /etc/zcraq/coordinator.toml"
    ]
    assert _directives(NODE_TEMPLATE)["ExecStart"] == [f"{INSTALLED_BINARY} node --config /etc/zcraq/%i.toml"]


def test_units_share_user_model_and_state_layout() -> None:
    coordinator, node = _directives(COORDINATOR_UNIT), _directives(NODE_TEMPLATE)
    assert coordinator["StateDirectory"] == ["zcraq/coordinator"]
    assert node["StateDirectory"] == ["zcraq/%i"]
    for unit in (coordinator, node):
        assert unit["DynamicUser"] == ["yes"]
        assert "User" not in unit and "Group" not in unit
        assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]  # zcraq/notify.py
        assert unit["WatchdogSec"] == ["10s"]
        assert unit["Restart"] == ["on-failure"]
        assert unit["KillSignal"] == ["SIGTERM"]
        assert unit["CapabilityBoundingSet"] == [""]
        assert unit["ProtectSystem"] == ["strict"]


def test_node_starts_after_coordinator_without_depending_on_it() -> None:
    node = _directives(NODE_TEMPLATE)
    assert "zcraq-coordinator.service" in node["Wants"][0].split()
    assert "zcraq-coordinator.service" in node["After"][0].split()
    assert "network-online.target" in node["After"][0].split()
    # Requires/BindsTo would stop or restart every node whenever the coordinator restarts.
    assert "Requires" not in node and "BindsTo" not in node and "PartOf" not in node
