"""A fake /proc under a temporary directory: the kernel's files, faked (``/proc/stat`` and ``/proc/<pid>/stat``).

The host's CPUs run ``busy`` and ``idle`` jiffies (``/proc/stat``); processes run ticks of their own and
``exit`` reaps one into its parent's ``cutime`` as the kernel does when a parent waits for its child.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Proc:
    ppid: int
    start: int
    own: int = 0
    reaped: int = 0


class FakeProc:
    def __init__(self, root: Path, n_cpus: int = 2) -> None:
        self.root = root
        self.n_cpus = n_cpus
        self.busy = 1000  # jiffies since boot
        self.idle = 9000
        self.procs: dict[int, Proc] = {}
        self._start = 1000
        self.write()

    def spawn(self, pid: int, ppid: int, own: int = 0) -> None:
        self._start += 1
        self.procs[pid] = Proc(ppid=ppid, start=self._start, own=own)
        self.write()

    def run(self, pid: int, ticks: int) -> None:
        """The process runs ``ticks`` (its own CPU time; the host's busy time is the caller's to advance)."""
        self.procs[pid].own += ticks
        self.write()

    def host(self, busy: int, idle: int) -> None:
        """The host's CPUs, all together, run ``busy`` and rest ``idle`` jiffies."""
        self.busy += busy
        self.idle += idle
        self.write()

    def exit(self, pid: int, reaped: bool = True) -> None:
        p = self.procs.pop(pid)
        if reaped and p.ppid in self.procs:
            self.procs[p.ppid].reaped += p.own + p.reaped
        self.write()

    def write(self) -> None:
        cpus = "".join(f"cpu{i} 0 0 0 0 0 0 0 0 0 0\n" for i in range(self.n_cpus))
        (self.root / "stat").write_text(f"cpu  {self.busy} 0 0 {self.idle} 0 0 0 0 0 0\n{cpus}intr 0\nctxt 0\n")
        for d in self.root.iterdir():
            if d.name.isdigit() and int(d.name) not in self.procs:
                (d / "stat").unlink()
                d.rmdir()
        for pid, p in self.procs.items():
            d = self.root / str(pid)
            d.mkdir(exist_ok=True)
            fields = f"S {p.ppid} {pid} {pid} 0 -1 4194304 0 0 0 0 {p.own} 0 {p.reaped} 0 20 0 1 0 {p.start} 0 0"
            (d / "stat").write_text(f"{pid} (python3) {fields}\n")


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
