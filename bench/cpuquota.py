"""CPU quotas for benchmark processes: each capped process alone in a cgroup limited to a fraction
of one CPU, so that a chain of N nodes gets N times the CPU of one node even on a small machine.

cgroup v1's cpu controller (cpu.cfs_quota_us) or cgroup v2's cpu.max, whichever is usable; the
groups live under ``zcraq-bench-<pid>`` and are removed when the benchmark ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path



class CpuQuotaError(RuntimeError):
    """No cgroup cpu controller this process may use (the message says why)."""


def _own_cgroup(match: Callable[[str, list[str]], bool]) -> str:
    """This process's cgroup path in the hierarchy whose /proc/self/cgroup line ``match``es."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hierarchy, controllers, path = line.split(":", 2)
            if match(hierarchy, controllers.split(",") if controllers else []):
                return path
    except (OSError, ValueError):
        pass
    return "/"


def _under(mount: Path, path: str) -> Path:
    # Inside a container the path /proc/self/cgroup names may not exist under this mount: then
    # the mount's root is our group.
    candidate = mount / path.lstrip("/")
    return candidate if candidate.is_dir() else mount


def _cgroup_mounts() -> list[tuple[str, Path, list[str]]]:
    """(filesystem type, mount point, options) of every cgroup/cgroup2 mount."""
    out = []
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                out.append((parts[2], Path(parts[1]), parts[3].split(",")))
    except OSError:
        pass
    return out


class CpuQuota:
    """One cgroup per capped process, each limited to ``fraction`` of one CPU (CFS bandwidth
    control, 100 ms period), under a parent group ``zcraq-bench-<our pid>``.

    Groups are made lazily by ``add`` and removed by ``close`` (after their processes exited: a
    cgroup with tasks cannot be removed, and nothing is moved back). Uses cgroup v1's cpu
    controller if mounted, else a cgroup2 mount that offers "cpu"."""

    PERIOD_US = 100_000

    def __init__(self, fraction: float, say: Callable[[str], None] | None = None) -> None:
        if not fraction > 0:
            raise ValueError(f"CPU fraction must be positive, got {fraction}")
        # The kernel refuses quotas under 1 ms.
        self.quota_us = max(1000, round(fraction * self.PERIOD_US))
        self.fraction = fraction
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.version, self.base = self.detect()
        self.parent = self.base / f"zcraq-bench-{os.getpid()}"
        self._made: list[Path] = []  # groups we created, in order: close() removes them in reverse

    @staticmethod
    def detect() -> tuple[str, Path]:
        """("v1" | "v2", the cgroup directory to create groups in); CpuQuotaError naming why
        neither is usable."""
        reasons = []
        mounts = _cgroup_mounts()
        v1 = [m for kind, m, opts in mounts if kind == "cgroup" and "cpu" in opts]
        if not v1:
            reasons.append("cgroup v1: no cpu controller mounted")
        for mount in v1:
            base = _under(mount, _own_cgroup(lambda h, c: "cpu" in c))
            why = _unwritable(base, "cpu.cfs_quota_us")
            if why is None:
                return "v1", base
            reasons.append(f"cgroup v1 ({base}): {why}")
        v2 = [m for kind, m, _opts in mounts if kind == "cgroup2"]
        if not v2:
            reasons.append("cgroup v2: no cgroup2 mount")
        for mount in v2:
            base = _under(mount, _own_cgroup(lambda h, c: h == "0" and not c))
            try:
                controllers = (base / "cgroup.controllers").read_text().split()
            except OSError as error:
                reasons.append(f"cgroup v2 ({base}): cannot read cgroup.controllers: {error.strerror}")
                continue
            if "cpu" not in controllers:
                reasons.append(f"cgroup v2 ({base}): cpu controller not available "
                               f"(cgroup.controllers: {' '.join(controllers) or 'empty'})")
                continue
            why = _unwritable(base, "cgroup.subtree_control")
            if why is None and base != mount:
                try:
                    enabled = "cpu" in (base / "cgroup.subtree_control").read_text().split()
                    busy = bool((base / "cgroup.procs").read_text().strip())
                except OSError as error:
                    enabled, busy = False, False
                    why = f"cannot read its controls: {error.strerror}"
                if not enabled and busy:
                    # "No internal processes": +cpu cannot be enabled in a group that holds processes.
                    why = "cpu is not enabled in its cgroup.subtree_control and cannot be, as it holds processes"
            if why is None:
                return "v2", base
            reasons.append(f"cgroup v2 ({base}): {why}")
        raise CpuQuotaError("cannot cap CPU with cgroups: " + "; ".join(reasons))

    def add(self, name: str, pid: int) -> None:
        """Put process ``pid`` alone in a new group ``name``, capped at the quota."""
        if not self.parent.is_dir():
            self._sweep_stale()
            if self.version == "v2":
                # Child groups only get cpu.max if "cpu" is enabled in every ancestor's subtree_control.
                self._enable_cpu(self.base)
            self._mkdir(self.parent)
            if self.version == "v2":
                self._enable_cpu(self.parent)
        group = self.parent / name
        self._mkdir(group)
        try:
            if self.version == "v1":
                (group / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(self.quota_us))
            else:
                (group / "cpu.max").write_text(f"{self.quota_us} {self.PERIOD_US}")
            # cgroup.procs moves every thread of the process; threads it starts later follow.
            (group / "cgroup.procs").write_text(str(pid))
        except OSError as error:
            raise CpuQuotaError(f"cannot cap {name} (pid {pid}) in {group}: {error}") from error

    def close(self, timeout: float = 3.0) -> None:
        """Remove every group we made (their processes must have exited); never raises."""
        for group in reversed(self._made):
            deadline = time.monotonic() + timeout
            while True:
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as error:
                    # An exiting task can linger for a moment (EBUSY); anything else will not pass.
                    if time.monotonic() >= deadline or error.errno != errno.EBUSY:
                        self.say(f"warning: could not remove cgroup {group}: {error.strerror}")
                        break
                    time.sleep(0.05)
        self._made.clear()

    def _mkdir(self, group: Path) -> None:
        self._made.append(group)  # before mkdir: an interrupt right after it still cleans up
        try:
            group.mkdir(exist_ok=True)
        except OSError as error:
            raise CpuQuotaError(f"cannot create cgroup {group}: {error.strerror}") from error

    def _enable_cpu(self, group: Path) -> None:
        control = group / "cgroup.subtree_control"
        try:
            if "cpu" not in control.read_text().split():
                control.write_text("+cpu")
        except OSError as error:
            # EBUSY: the "no internal processes" rule (a non-root group holding processes).
            raise CpuQuotaError(f"cannot enable the cpu controller in {control}: {error.strerror}") from error

    def _sweep_stale(self) -> None:
        # Groups of benchmarks that were SIGKILLed; rmdir only succeeds on empty groups.
        for stale in self.base.glob("zcraq-bench-*"):
            try:
                os.kill(int(stale.name.rsplit("-", 1)[1]), 0)
                continue  # its benchmark is still running
            except ProcessLookupError:
                pass
            except (ValueError, OSError):
                continue
            for group in [*(p for p in stale.iterdir() if p.is_dir()), stale]:
                with contextlib.suppress(OSError):
                    group.rmdir()


def _unwritable(base: Path, control: str) -> str | None:
    """Why groups cannot be made in ``base`` (None if they can)."""
    if not (base / control).exists():
        return f"no {control}"
    if not os.access(base, os.W_OK):
        # access(2) also answers EROFS for a read-only mount
        return "read-only mount" if os.statvfs(base).f_flag & os.ST_RDONLY else \
            f"no write permission (uid {os.geteuid()}; needs root)"
    return None
