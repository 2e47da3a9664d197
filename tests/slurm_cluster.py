"""A throwaway single-node SLURM cluster on localhost for tests (Debian packages; see env-notes section 7).

`SlurmCluster(state_dir)` starts munged (unless one already answers), slurmctld and slurmd with their state, logs
and pid files under `state_dir`, and links the config to /etc/slurm/slurm.conf: the nested srun inside snakemake
jobs runs with SLURM_* (SLURM_CONF included) stripped, so the config must be at the default path. `stop()` cancels
what is left in the queue, stops the daemons it started by PID and removes its symlink. Every wait has a timeout.
The `slurm_cluster` fixture skips (with the reason) where SLURM cannot be installed or started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sinfo", "squeue", "scancel", "sbatch", "munged", "munge", "unmunge"]
CONF = Path("/etc/slurm/slurm.conf")
MUNGE_RUN = Path("/run/munge")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed or started here; the message says why."""


def _run(cmd, timeout=30.0, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": SBIN_PATH, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"timed out after {timeout:.0f} s")
    except OSError as exc:  # binary missing
        return subprocess.CompletedProcess(cmd, 127, "", str(exc))


def _missing() -> list[str]:
    return [b for b in BINARIES if shutil.which(b, path=SBIN_PATH) is None]


def ensure_installed() -> None:
    """apt-get the SLURM and munge packages if any binary is missing (root with apt-get only)."""
    missing = _missing()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"SLURM is not installed (missing {missing}) and installing it needs root and apt-get")
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    result = _run(install, timeout=600)
    if result.returncode != 0:  # stale package lists: update once and retry
        _run(["apt-get", "update"], timeout=300)
        result = _run(install, timeout=600)
    if result.returncode != 0 or _missing():
        raise SlurmUnavailable(f"apt-get install {' '.join(PACKAGES)} failed (rc {result.returncode}): "
                               f"{result.stderr[-1000:]}")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited (nobody may reap it in this sandbox)


def _wait(predicate, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still alive after `timeout` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _alive(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait(lambda: not _alive(pid), timeout):
            return


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _munge_works() -> bool:
    return _run("munge -n | unmunge", shell=True, timeout=10).returncode == 0


class SlurmCluster:
    def __init__(self, state_dir: str | os.PathLike):
        self.dir = Path(state_dir).resolve()
        self.conf = self.dir / "slurm.conf"
        self.pid_files = [self.dir / "slurmd.pid", self.dir / "slurmctld.pid"]  # stop order
        self.linked = False
        self.munged_pid = None

    def start(self, timeout: float = 60.0) -> None:
        ensure_installed()
        if CONF.is_symlink() and not CONF.exists():
            CONF.unlink()  # dangling link left by a crashed run
        if CONF.exists() or CONF.is_symlink():
            raise SlurmUnavailable(f"{CONF} already exists (another cluster or a site config?); not overwriting it")
        self._start_munge()
        for sub in ("state", "spool"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self._config())
        CONF.parent.mkdir(parents=True, exist_ok=True)
        CONF.symlink_to(self.conf)
        self.linked = True
        for daemon in ("slurmctld", "slurmd"):  # both daemonize at once
            result = _run([daemon], timeout=30)
            if result.returncode != 0:
                raise SlurmUnavailable(f"{daemon} failed to start (rc {result.returncode}): {result.stderr[-500:]}")
        if not _wait(lambda: "idle" in _run(["sinfo", "-h", "-o", "%t"], timeout=10).stdout, timeout):
            raise SlurmUnavailable(f"the node did not become idle in {timeout:.0f} s: {self._log_tails()}")

    def _start_munge(self) -> None:
        if _munge_works():
            return  # someone else's munged: use it, leave it running
        if not Path("/etc/munge/munge.key").exists():
            raise SlurmUnavailable("/etc/munge/munge.key is missing (reinstall munge)")
        MUNGE_RUN.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN, "munge", "munge")
        result = _run(["runuser", "-u", "munge", "--", "munged"], timeout=30)
        if result.returncode != 0 or not _wait(_munge_works, 10):
            raise SlurmUnavailable(f"munged failed to start (rc {result.returncode}): {result.stderr[-500:]}")
        self.munged_pid = _read_pid(MUNGE_RUN / "munged.pid")  # only now: never a stale pid file

    def _config(self) -> str:
        mem_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 * 85 // 100  # MemTotal, 85%
        d = self.dir
        return f"""\
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# snakemake polls with squeue: finished jobs must stay visible for >= 120 s (an hour: a whole test run)
MinJobAge=3600
NodeName=localhost NodeHostname={os.uname().nodename} CPUs={os.cpu_count()} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

    def _log_tails(self) -> str:
        return " | ".join(f"{p.name}: {p.read_text(errors='replace')[-400:]}"
                          for p in (self.dir / "slurmctld.log", self.dir / "slurmd.log") if p.exists())

    def jobs(self) -> dict[str, str]:
        """Job id -> state of every job the controller still remembers (finished ones for MinJobAge)."""
        out = _run(["squeue", "-h", "-t", "all", "-o", "%i %T"], timeout=10).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def stop(self) -> None:
        """Cancel leftover jobs, stop the daemons this cluster started and remove its config link."""
        if self.linked and any(_read_pid(p) for p in self.pid_files):
            _run(["scancel", "--full", "--user", "root"], timeout=10)
            _wait(lambda: not _run(["squeue", "-h", "-t", "running,completing"], timeout=10).stdout.strip(), 30)
        for pid in filter(None, map(_read_pid, self.pid_files)):
            _stop_pid(pid)
        if self.munged_pid:
            _stop_pid(self.munged_pid)
            self.munged_pid = None
        if self.linked and CONF.is_symlink() and Path(os.readlink(CONF)) == self.conf:
            CONF.unlink()
        self.linked = False

    def __enter__(self) -> "SlurmCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running single-node cluster (partition "debug"); skips, with the reason, where SLURM is unavailable."""
    started = time.monotonic()
    try:
        cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).__enter__()
    except SlurmUnavailable as exc:
        print(f"\nSKIP: no local SLURM cluster: {exc}")
        pytest.skip(f"no local SLURM cluster: {exc}")
    print(f"\nSLURM cluster up in {time.monotonic() - started:.1f} s (state in {cluster.dir})")
    try:
        yield cluster
    finally:
        cluster.__exit__(None, None, None)
