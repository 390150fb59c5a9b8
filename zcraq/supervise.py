"""When ``zcraq run`` starts a dead child again: systemd's ``Restart=on-failure`` with a back-off
and a start limit, as a small state machine with the clock passed in (so it is tested without
waiting).

- A child that exits with a failure (a non-zero code or a signal) is started again after a delay:
  1 s, doubled after each failed start, up to 30 s. A start failed if the child exited soon after
  it, before it was seen doing its job (a node in the chain, the coordinator answering).
- Exit code 0 means someone stopped the child on purpose (SIGTERM): it is left stopped.
- Exit code 2 means the child's config is unusable (a port taken, a bad file): starting it again
  cannot help, so the cluster gives up, as systemd's ``RestartPreventExitStatus=2`` would.
- After five failed starts in a row the cluster gives up too (systemd's start limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXIT_CONFIG_ERROR = 2


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 1.0
    max_delay: float = 30.0
    failed_start_within: float = 10.0  # an exit this soon after the start: the start failed
    failed_starts_limit: int = 5


@dataclass(frozen=True)
class Restart:
    at: float  # monotonic time of the next start
    delay: float


@dataclass(frozen=True)
class LeaveStopped:
    reason: str


@dataclass(frozen=True)
class GiveUp:
    reason: str


Decision = Restart | LeaveStopped | GiveUp


@dataclass
class Restarts:
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    _started_at: dict[str, float] = field(default_factory=dict)
    _failed_starts: dict[str, int] = field(default_factory=dict)
    _due: dict[str, float] = field(default_factory=dict)
    _up: set[str] = field(default_factory=set)

    def started(self, name: str, now: float) -> None:
        self._started_at[name] = now
        self._due.pop(name, None)
        self._up.discard(name)

    def up(self, name: str) -> None:
        """``name`` was seen doing its job since its last start: that start succeeded."""
        self._up.add(name)

    def exited(self, name: str, code: int, now: float) -> Decision:
        """What to do about ``name``, which exited with ``code`` (negative: killed by a signal)."""
        if code == 0:
            return LeaveStopped("it exited cleanly, so someone stopped it on purpose; not restarted")
        if code == EXIT_CONFIG_ERROR:
            return GiveUp("its config cannot be used (see its error above); restarting cannot help")
        if name not in self._up and now - self._started_at.get(name, float("-inf")) < self.policy.failed_start_within:
            failed = self._failed_starts[name] = self._failed_starts.get(name, 0) + 1
        else:
            failed = self._failed_starts[name] = 0
        if failed >= self.policy.failed_starts_limit:
            return GiveUp(f"it failed {failed} times in a row within {self.policy.failed_start_within:g} s "
                          f"of its start")
        delay = min(self.policy.max_delay, self.policy.first_delay * 2 ** failed)
        self._due[name] = now + delay
        return Restart(now + delay, delay)

    def due(self, now: float) -> list[str]:
        """The children whose restart time has come (each is returned once)."""
        names = sorted(name for name, at in self._due.items() if at <= now)
        for name in names:
            del self._due[name]
        return names
