"""Process-tree and cgroup CPU time: on /proc and cgroup trees written under tmp_path, and on real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_proc import Clock, FakeProc

from monitor.errors import SourceUnavailable
from monitor.processes import (
    CLOCK_TICKS_PER_S,
    CgroupCpu,
    PidfileRoots,
    PidRoots,
    ProcessTree,
    ProcSample,
    descendants,
    parse_stat,
    read_sample,
    tree_ticks_delta,
)


def ticks(tree: ProcessTree) -> int:
    return round(tree.cpu_s() * CLOCK_TICKS_PER_S)


def test_parse_stat_with_a_hostile_command_name():
    s = parse_stat("42 (a) b (c)) R 7 42 42 0 -1 0 0 0 0 0 11 12 13 14 20 0 3 0 5555 0 0\n")
    assert s == ProcSample(pid=42, ppid=7, start_ticks=5555, own_ticks=23, reaped_ticks=27)


def test_reads_this_process_from_the_real_proc():
    s = read_sample(Path("/proc"), os.getpid())
    assert s is not None and s.ppid == os.getppid() and s.own_ticks >= 0
    assert read_sample(Path("/proc"), 2**22 + 1) is None  # above pid_max: no such process


def test_descendants_follow_the_parent_links():
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 12, 20: 1}
    assert descendants([10], parents) == {10, 11, 12, 13}
    assert descendants([10, 20], parents) == {10, 11, 12, 13, 20}
    assert descendants([99], parents) == set()
    assert descendants([10], parents, exclude=12) == {10, 11}  # the monitor, and what it started, never


def sample(pid: int, ppid: int, own: int, reaped: int = 0, start: int = 1) -> ProcSample:
    return ProcSample(pid=pid, ppid=ppid, start_ticks=start, own_ticks=own, reaped_ticks=reaped)


def by_key(*samples: ProcSample) -> dict:
    return {s.key: s for s in samples}


def test_a_child_reaped_by_a_followed_parent_is_counted_once():
    prev = by_key(sample(10, 1, own=100), sample(11, 10, own=50))
    # the child ran 5 more ticks, exited and was reaped: the parent's cutime holds its 55 whole
    now = by_key(sample(10, 1, own=102, reaped=55))
    assert tree_ticks_delta(prev, now, baseline=set()) == 2 + 5


def test_a_child_seen_late_counts_whole_and_one_never_seen_through_cutime():
    prev = by_key(sample(10, 1, own=100))
    born = sample(12, 10, own=30, start=9)
    now = by_key(sample(10, 1, own=100, reaped=8), born)  # 8: a child born and reaped between reads
    assert tree_ticks_delta(prev, now, baseline=set()) == 30 + 8
    assert tree_ticks_delta(prev, now, baseline={born.key}) == 8  # the tree's first sight: not counted


def test_an_orphan_or_an_unreaped_exit_never_takes_time_back():
    prev = by_key(sample(10, 1, own=100), sample(11, 10, own=50))
    assert tree_ticks_delta(prev, by_key(sample(10, 1, own=100)), baseline=set()) == 0  # auto-reaped (SIG_IGN)
    assert tree_ticks_delta(prev, by_key(sample(11, 1, own=60)), baseline=set()) == 10  # root gone, child orphaned


def test_a_reused_pid_is_a_new_process():
    prev = by_key(sample(11, 10, own=500, start=5), sample(10, 1, own=1))
    now = by_key(sample(11, 10, own=3, start=77), sample(10, 1, own=1))  # 11 exited unreaped; its PID reused
    assert tree_ticks_delta(prev, now, baseline=set()) == 3


def test_the_tree_follows_children_as_they_come_and_go(tmp_path: Path):
    proc, clock = FakeProc(tmp_path), Clock()
    proc.spawn(1, 0)
    proc.spawn(100, 1, own=5000)  # the server, with CPU time before it was followed
    proc.spawn(101, 100, own=700)  # its engine core
    proc.spawn(200, 1, own=10)  # someone else
    tree = ProcessTree(PidRoots(100, tmp_path), tmp_path, rescan_s=1.0, clock=clock)
    tree.open()
    assert ticks(tree) == 0 and tree.processes() == 2  # the past is not counted

    proc.run(100, 3)
    proc.run(101, 40)
    proc.run(200, 999)
    clock.t += 0.1
    assert ticks(tree) == 43

    proc.spawn(102, 101, own=7)  # a worker born between scans: not read until the next scan
    clock.t += 0.1
    assert ticks(tree) == 43
    clock.t += 1.0
    proc.run(102, 5)
    assert ticks(tree) == 55 and tree.processes() == 3  # found, counted whole

    proc.run(102, 8)
    proc.exit(102)  # reaped by the engine core: its 20 ticks move to 101's cutime
    clock.t += 0.1
    assert ticks(tree) == 63

    proc.spawn(103, 100, own=0)
    proc.run(103, 9)
    proc.exit(103)  # born and reaped between two reads
    clock.t += 0.1
    assert ticks(tree) == 72

    proc.exit(101)
    proc.exit(100, reaped=False)  # the server gone (reaped by its parent, which is not followed)
    clock.t += 0.1
    assert ticks(tree) == 72 and tree.processes() == 0
    proc.spawn(100, 1, own=0)  # its PID reused by someone else: not the server
    proc.run(100, 50)
    clock.t += 2.0
    assert ticks(tree) == 72 and tree.processes() == 0


def test_a_pidfile_is_reread_and_a_new_pid_is_a_new_tree(tmp_path: Path):
    root = tmp_path / "proc"
    root.mkdir()
    proc, clock = FakeProc(root), Clock()
    proc.spawn(1, 0)
    pidfile = tmp_path / "server.pid"
    tree = ProcessTree(PidfileRoots(pidfile), root, rescan_s=1.0, clock=clock)
    tree.open()  # no file yet: no process, no error
    assert ticks(tree) == 0 and tree.processes() == 0

    proc.spawn(100, 1, own=900)
    pidfile.write_text("100\n")
    clock.t += 1.0
    assert ticks(tree) == 0 and tree.processes() == 1  # first sight: a baseline
    proc.run(100, 30)
    clock.t += 0.1
    assert ticks(tree) == 30

    proc.spawn(300, 1, own=4000)  # the offline run replaces the server
    pidfile.write_text("300\n")
    proc.run(300, 20)
    clock.t += 1.0
    assert ticks(tree) == 30
    proc.run(300, 11)
    clock.t += 0.1
    assert ticks(tree) == 41  # the counter goes on, never back

    pidfile.write_text("not a pid\n")
    clock.t += 1.0
    assert ticks(tree) == 41 and tree.processes() == 0  # a warning, no process
    with pytest.raises(SourceUnavailable, match="not PIDs"):
        PidfileRoots(pidfile).check()


def test_a_missing_pid_is_refused_when_the_monitor_starts(tmp_path: Path):
    FakeProc(tmp_path).spawn(1, 0)
    with pytest.raises(SourceUnavailable, match="--attribute-pid 4242: no such process"):
        ProcessTree(PidRoots(4242, tmp_path), tmp_path).open()


def test_a_real_tree_counts_children_that_came_and_went_once():
    """A parent starts three children in turn, each burning ~0.3 s of CPU, and waits for each."""
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    parent_code = (
        "import subprocess, sys, time\n"
        "time.sleep(0.3)\n"
        f"for _ in range(3): subprocess.run([sys.executable, '-c', {burn!r}])\n"
        "time.sleep(0.3)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    tree = ProcessTree(PidRoots(parent.pid), rescan_s=0.2)
    tree.open()
    cpu = tree.cpu_s()
    while parent.poll() is None:
        time.sleep(0.05)
        cpu = tree.cpu_s()
    # the children's 0.9 s (and their interpreters' start-up), once; the parent's own time is small
    assert 0.9 <= cpu < 2.0


def test_a_cgroup_v2_and_v1(tmp_path: Path):
    v2 = tmp_path / "v2" / "vllm.slice"
    v2.mkdir(parents=True)
    (v2 / "cpu.stat").write_text("usage_usec 5000000\nuser_usec 4000000\nsystem_usec 1000000\n")
    (v2 / "cgroup.procs").write_text("10\n11\n")
    cg = CgroupCpu(Path("vllm.slice"), cgroup_root=tmp_path / "v2")
    cg.open()
    assert cg.cpu_s() == 0.0 and cg.processes() == 2
    (v2 / "cpu.stat").write_text("usage_usec 6250000\nuser_usec 5000000\nsystem_usec 1250000\n")
    assert cg.cpu_s() == pytest.approx(1.25)

    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "cpuacct.usage").write_text("2000000000\n")
    cg = CgroupCpu(v1)
    cg.open()
    cg.cpu_s()
    (v1 / "cpuacct.usage").write_text("2500000000\n")
    assert cg.cpu_s() == pytest.approx(0.5) and cg.processes() is None

    with pytest.raises(SourceUnavailable, match=r"--attribute-cgroup .*nowhere"):
        CgroupCpu(tmp_path / "nowhere").open()
