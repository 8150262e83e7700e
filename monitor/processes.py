"""CPU time of the processes the energy is attributed to: a process tree followed in /proc, or a cgroup.

A process tree is named by its roots (a PID, or a pidfile re-read as it changes: ``joulebench compare``
starts the monitor before vLLM, so the PID is known only later) and followed as children come and go:
members are found by a scan of ``/proc`` every ``rescan_s`` and read more often in between.

The tree's CPU time is a monotone counter that starts at zero when a tree is first seen (what its
processes ran before is not counted). ``/proc/<pid>/stat`` gives each process its own CPU time
(``utime + stime``, all threads) and its reaped children's (``cutime + cstime``: a child's total is added
to its parent when the parent waits for it). The counter takes, per read (``tree_ticks_delta``):

* the growth of every member's own time and of its reaped children's time;
* the whole time of a member first seen after the tree was (a child born since);
* less, for a member that left and whose parent is still followed, what was already counted of it: its
  parent's ``cutime`` now holds it whole. A parent's reaped growth is never taken below zero, so a
  child reaped by no one followed (an orphan, or a parent that ignores SIGCHLD) costs only its time
  since the last read.

A child born and reaped between two scans is counted through its parent's ``cutime``; one that lives
longer is counted whole when a scan finds it (up to ``rescan_s`` late). A process is identified by its
PID and start time, so a reused PID is a new process.

A cgroup needs none of this: cgroup v2's ``cpu.stat`` ``usage_usec`` (or v1's ``cpuacct.usage``) counts
the CPU time of every process that ever ran in it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from monitor.errors import MonitorError, SourceUnavailable

log = logging.getLogger(__name__)

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
CGROUP_ROOT = Path("/sys/fs/cgroup")

#: A process: (pid, start time in clock ticks since boot). A PID alone is reused.
Key = tuple[int, int]


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One read of ``/proc/<pid>/stat``: CPU times in clock ticks."""

    pid: int
    ppid: int
    start_ticks: int
    own_ticks: int  # utime + stime
    reaped_ticks: int  # cutime + cstime: children waited for

    @property
    def key(self) -> Key:
        return (self.pid, self.start_ticks)

    @property
    def total_ticks(self) -> int:
        return self.own_ticks + self.reaped_ticks


def parse_stat(text: str) -> ProcSample:
    """A ``/proc/<pid>/stat`` line. The command name may hold spaces and parentheses: split at the last ')'."""
    pid = int(text[: text.index("(")])
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid 4, utime 14, stime 15, cutime 16, cstime 17, starttime 22
    return ProcSample(
        pid=pid,
        ppid=int(rest[1]),
        start_ticks=int(rest[19]),
        own_ticks=int(rest[11]) + int(rest[12]),
        reaped_ticks=int(rest[13]) + int(rest[14]),
    )


def read_sample(proc_root: Path, pid: int) -> ProcSample | None:
    """The process's sample, or None when it is gone (or unreadable)."""
    try:
        return parse_stat((proc_root / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def scan(proc_root: Path) -> dict[int, ProcSample]:
    """Every process's sample, by PID."""
    out: dict[int, ProcSample] = {}
    try:
        names = os.listdir(proc_root)
    except OSError:
        return out
    for name in names:
        if name.isdigit() and (s := read_sample(proc_root, int(name))) is not None:
            out[s.pid] = s
    return out


def descendants(roots: Iterable[int], parents: Mapping[int, int], exclude: int | None = None) -> set[int]:
    """The roots and every process below them, from a PID → parent PID map (roots not in it are left out),
    without ``exclude`` and what is below it."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [r for r in roots if r in parents]
    while todo:
        pid = todo.pop()
        if pid not in found and pid != exclude:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def tree_ticks_delta(prev: Mapping[Key, ProcSample], now: Mapping[Key, ProcSample], baseline: set[Key]) -> int:
    """CPU ticks the tree ran between two reads of its members (see the module's docstring). Never negative.

    ``baseline`` holds the members first seen with the tree: their time before it is not counted.
    """
    by_pid = {s.pid: k for k, s in now.items()}
    counted: dict[Key, int] = {}  # per parent still followed: its departed children's time already counted
    for k in prev.keys() - now.keys():
        gone = prev[k]
        parent = by_pid.get(gone.ppid)
        if parent is not None and parent in prev:
            counted[parent] = counted.get(parent, 0) + gone.total_ticks
    delta = 0
    for k, s in now.items():
        before = prev.get(k)
        if before is None:
            delta += 0 if k in baseline else s.total_ticks
            continue
        delta += max(s.own_ticks - before.own_ticks, 0)
        delta += max(s.reaped_ticks - before.reaped_ticks - counted.get(k, 0), 0)
    return delta


class CpuTime(Protocol):
    """The CPU time of what the energy is attributed to. Constructing one does no I/O; ``open`` checks it."""

    def open(self) -> None: ...

    def cpu_s(self) -> float:
        """CPU seconds since it was first read: monotone."""
        ...

    def processes(self) -> int | None:
        """How many processes it holds now (None where not known)."""
        ...

    def describe(self) -> str: ...


class Roots(Protocol):
    """The PIDs whose trees are followed; ``check`` raises when the monitor starts on a bad name."""

    def check(self) -> None: ...

    def pids(self) -> list[int]: ...

    def describe(self) -> str: ...


class PidRoots:
    """One PID, given once."""

    def __init__(self, pid: int, proc_root: Path = Path("/proc")) -> None:
        self.pid = pid
        self._proc = Path(proc_root)

    def check(self) -> None:
        if read_sample(self._proc, self.pid) is None:
            raise SourceUnavailable(f"--attribute-pid {self.pid}: no such process")

    def pids(self) -> list[int]:
        return [self.pid]

    def describe(self) -> str:
        return f"pid {self.pid}"


class PidfileRoots:
    """The PIDs written in a file, one per line, re-read every time they are asked for.

    A file that does not exist (yet) names no process; one that cannot be read, or holds anything but
    PIDs, is an error when the monitor starts and a warning (no process) after.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._complaint = ""

    def check(self) -> None:
        self._read()

    def pids(self) -> list[int]:
        try:
            pids = self._read()
        except MonitorError as err:
            if str(err) != self._complaint:
                log.warning("%s: following no process", err)
                self._complaint = str(err)
            return []
        self._complaint = ""
        return pids

    def _read(self) -> list[int]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as err:
            raise SourceUnavailable(f"--attribute-pidfile {self.path}: cannot be read ({err})") from err
        try:
            pids = [int(line) for line in text.split()]
        except ValueError:
            raise SourceUnavailable(
                f"--attribute-pidfile {self.path}: holds {text.strip()[:40]!r}, not PIDs (one per line)"
            ) from None
        if any(p <= 0 for p in pids):
            raise SourceUnavailable(f"--attribute-pidfile {self.path}: PIDs must be positive, got {pids}")
        return pids

    def describe(self) -> str:
        return f"pidfile {self.path}"


class ProcessTree:
    """The roots' process tree: members re-found every ``rescan_s``, read on every ``cpu_s``.

    ``exclude`` (the monitor's own PID) is never a member, nor what is below it, even under a root that
    started it.
    """

    def __init__(
        self,
        roots: Roots,
        proc_root: Path = Path("/proc"),
        rescan_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        exclude: int | None = None,
    ) -> None:
        self.roots = roots
        self._proc = Path(proc_root)
        self._exclude = exclude
        self._rescan_s = rescan_s
        self._clock = clock
        self._next_scan = -math.inf
        self._root_pids: list[int] = []
        self._root_keys: dict[int, Key] = {}  # a root's identity when first seen: a reused PID is not it
        self._members: dict[Key, ProcSample] = {}
        self._baseline: set[Key] = set()
        self._ticks = 0

    def open(self) -> None:
        self.roots.check()

    def describe(self) -> str:
        return f"the process tree of {self.roots.describe()}"

    def processes(self) -> int | None:
        return len(self._members)

    def cpu_s(self) -> float:
        now = self._clock()
        if now >= self._next_scan:
            self._next_scan = now + self._rescan_s
            current = self._scan()
        else:
            current = {}
            for k in self._members:
                s = read_sample(self._proc, k[0])
                if s is not None and s.key == k:
                    current[k] = s
        self._ticks += tree_ticks_delta(self._members, current, self._baseline)
        self._members = current
        return self._ticks / CLOCK_TICKS_PER_S

    def _scan(self) -> dict[Key, ProcSample]:
        pids = self.roots.pids()
        every = scan(self._proc)
        parents = {pid: s.ppid for pid, s in every.items()}
        if pids != self._root_pids:  # new roots: a new tree
            self._root_pids, self._root_keys, self._members, self._baseline = pids, {}, {}, set()
        for p in pids:
            if p not in self._root_keys and p in every:  # a root's first sight: what its tree holds is the past
                self._root_keys[p] = every[p].key
                self._baseline |= {every[q].key for q in descendants([p], parents, self._exclude)}
        alive = [p for p in pids if p in every and every[p].key == self._root_keys[p]]
        return {every[q].key: every[q] for q in descendants(alive, parents, self._exclude)}


class CgroupCpu:
    """A cgroup's CPU time: v2 ``cpu.stat`` ``usage_usec``, else v1 ``cpuacct.usage`` (nanoseconds).

    ``path`` is the cgroup's directory, absolute or relative to ``/sys/fs/cgroup``.
    """

    def __init__(self, path: Path, cgroup_root: Path = CGROUP_ROOT) -> None:
        path = Path(path)
        self.path = path if path.is_absolute() else Path(cgroup_root) / path
        self._first: float | None = None

    def open(self) -> None:
        try:
            self._read()
        except (OSError, ValueError) as err:
            raise SourceUnavailable(
                f"--attribute-cgroup {self.path}: no readable cpu.stat (cgroup v2) or cpuacct.usage (v1): {err}"
            ) from err

    def _read(self) -> float:
        stat = self.path / "cpu.stat"
        if stat.exists():
            for line in stat.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "usage_usec":
                    return int(value) / 1e6
            raise ValueError(f"{stat} has no usage_usec")
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def cpu_s(self) -> float:
        now = self._read()
        if self._first is None:
            self._first = now
        return now - self._first

    def processes(self) -> int | None:
        try:
            return len((self.path / "cgroup.procs").read_text().split())
        except OSError:
            return None

    def describe(self) -> str:
        return f"cgroup {self.path}"
