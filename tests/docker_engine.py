"""A Docker engine of the test's own, for tests/test_compose.py, on a machine without systemd or registries.

``DockerEngine`` starts Debian's ``dockerd`` with its own data root, exec root, pid file and socket (no
iptables, no default bridge: the stack's own network is the only one), and stops it by that pid, so it
never touches an engine someone else runs. A test's engine dies with the test; a detached one (the stack
brought up by hand, tests/stack.py) outlives the command that started it until ``stop``, from any process.
``base_image`` makes the images' base without a registry: Debian bookworm with Python 3.11 by debootstrap
from the mirror apt already uses, imported as an image.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from joulebench.processes import Child

#: What the images need of the base, as the official Python image has it: ``python`` (3.11), venv, headers
#: (torch.compile builds C++ against Python.h).
BASE_PACKAGES = ("python3", "python3-venv", "python3-dev", "python-is-python3", "ca-certificates")


class DockerEngine:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.exec_root = root / "exec"
        self.pidfile = root / "dockerd.pid"
        self.child = Child("dockerd", [
            "dockerd", f"--data-root={root / 'data'}", f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}", f"--host=unix://{self.socket}", "--iptables=false", "--bridge=none",
        ], root / "dockerd.log", stop_timeout_s=60)  # fmt: skip

    @property
    def env(self) -> dict[str, str]:
        """The environment for the docker CLI and compose: this engine, and no user's compose settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
        return env | {"DOCKER_HOST": f"unix://{self.socket}", "COMPOSE_BAKE": "false"}

    def answers(self) -> bool:
        return self.socket.exists() and self.docker("version", timeout_s=30, check=False).returncode == 0

    def start(self, timeout_s: float = 120, detached: bool = False) -> DockerEngine:
        self.root.mkdir(parents=True, exist_ok=True)
        if detached:  # its own session, no parent-death signal: it runs on after this process
            with self.child.log_path.open("ab") as out:
                proc = subprocess.Popen(self.child.command, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        else:
            proc = self.child.start().proc
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if proc.poll() is not None:
                raise self.child.failed("exited while starting")
            if time.monotonic() > deadline:
                raise self.child.failed(f"did not answer within {timeout_s:.0f} s")
            time.sleep(0.5)
        return self

    def docker(self, *args: str, timeout_s: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess:
        run = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout_s, **kw)
        if check and run.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({run.returncode}):\n{run.stdout}{run.stderr}")
        return run

    def stop(self, timeout_s: float = 60) -> None:
        """SIGTERM to dockerd by its pid file (it stops its containerd), then unmount what it left mounted
        under its roots (its network namespace, at least)."""
        pid = int(self.pidfile.read_text()) if self.pidfile.is_file() else None
        if pid is not None and _is_dockerd(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while _is_dockerd(pid):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    raise self.child.failed(f"did not stop within {timeout_s:.0f} s of SIGTERM: killed")
                if self.child.proc is not None:
                    self.child.proc.poll()  # reaps our own child, so that its pid goes
                time.sleep(0.2)
        self.child.stop()
        for mount in reversed(mounts_under(self.root)):
            subprocess.run(["umount", mount], check=True)


def _is_dockerd(pid: int) -> bool:
    """Whether ``pid`` is a live dockerd (not a zombie, not a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.index("(") + 1 : stat.rindex(")")] == "dockerd" and stat[stat.rindex(")") + 2] != "Z"


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, in mount order."""
    prefix = str(root.resolve())
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [m for m in points if m == prefix or m.startswith(prefix + "/")]


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt already uses: the first non-security URI of its sources (deb822 or one-line)."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for f in files:
        if f.suffix not in (".list", ".sources") or not f.is_file():
            continue
        text = f.read_text(errors="replace")
        uris = re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
        for uri in uris:
            if "security" not in uri:
                return uri
    raise AssertionError(f"no Debian mirror in {', '.join(map(str, files))}")


def base_image(engine: DockerEngine, name: str, work: Path) -> None:
    """Debian bookworm (minbase) with Python 3.11, made by debootstrap and imported into ``engine``."""
    rootfs = work / "rootfs"
    try:
        run = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", "bookworm", str(rootfs),
             apt_mirror()],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert run.returncode == 0, f"debootstrap failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            engine.docker("import", "-", name, stdin=tar.stdout)
        assert tar.returncode == 0
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
