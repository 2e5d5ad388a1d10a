"""The README's Slurm recipe on a real, single-node Slurm: 3 shards and the merge job.

The test starts ``munged``, ``slurmctld`` and ``slurmd`` (Debian's ``slurm-wlm`` and
``munge``) on localhost with a private configuration, submits ``scripts/slurm/submit.sh``
(the script the README shows: a job array of ``scripts/slurm/shards.sbatch`` and a merge job
that depends on it) with a tiny claim in the smoke profile, and checks that the merged run
equals an unsharded run of the same claim, record for record. Without Slurm it is skipped
(``apt-get install slurm-wlm munge``); with ``NTKCHECK_REQUIRE_SLURM=1`` (CI) it fails
instead. The daemons need root (``slurmd`` launches jobs as their user).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from ntkcheck.runs.store import RECORD_KEY, load_run

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "slurm"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "scancel")
MISSING = [d for d in DAEMONS if shutil.which(d) is None
           and not Path("/usr/sbin", d).exists()]
REQUIRED = os.environ.get("NTKCHECK_REQUIRE_SLURM") == "1"


def _skip_or_fail(why: str) -> None:
    if REQUIRED:
        pytest.fail(f"NTKCHECK_REQUIRE_SLURM=1 but {why}")
    pytest.skip(why)


# A real claim, small: the empirical NTK at initialization against the analytic one, on the
# smoke profile's inputs, a pinned and a drawn architecture.
CLAIM = '''
import pytest
from hypothesis import example, given
from ntkcheck import strategies
from ntkcheck.arch import ArchSpec
from ntkcheck.kernels import analytic_kernels, empirical_ntk
from ntkcheck.metrics import relative_frobenius_error


@pytest.mark.claim(id="slurm-ntk-at-init", statement="the empirical NTK approaches the analytic",
                   source="Jacot et al. 2018, Theorem 1", metric="relative Frobenius error",
                   tolerance=0.5, rate=-0.5)
@given(spec=strategies.mlps(max_depth=2, parametrizations=("ntk",)))
@example(spec=ArchSpec(depth=1, activation="erf"))
def test_ntk_at_init(spec, ntk_sweep, ntk_device, ntk_measure, ntk_digits):
    reference = analytic_kernels(spec, ntk_digits.x).ntk
    for width, seed in ntk_sweep:
        with ntk_measure.guard(spec, width=width, seed=seed) as init_seed:
            net = spec.with_width(width).build(seed=init_seed,
                                               input_shape=ntk_digits.input_shape,
                                               device=ntk_device)
            ntk_measure(spec, width=width, seed=seed,
                        value=relative_frobenius_error(empirical_ntk(net, ntk_digits.x),
                                                       reference))
'''
IGNORED = ["run_id", "elapsed_s", "seq"]  # what legitimately differs between runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _wait(what: str, done, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}:\n{p.read_text()[-2000:]}" for p in logs if p.exists())
            pytest.fail(f"Slurm: {what} within {timeout:.0f} s\n{tails}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def slurm() -> Iterator[dict[str, str]]:
    """A single-node Slurm on localhost: yields the environment for its commands."""
    if MISSING:
        _skip_or_fail(f"Slurm is not installed ({', '.join(MISSING)} not found); on Debian: "
                      "apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        _skip_or_fail("the single-node Slurm of this test needs root (slurmd runs jobs)")
    try:
        munge_user = pwd.getpwnam("munge")
    except KeyError:
        _skip_or_fail("no 'munge' user (install munge)")
    key = Path("/etc/munge/munge.key")
    if not key.is_file():
        _skip_or_fail("no /etc/munge/munge.key (install munge, or run mungekey --create)")
    base = Path(tempfile.mkdtemp(prefix="ntkcheck-slurm-"))
    base.chmod(0o755)  # munged runs as the munge user and must reach its socket folder
    munge = base / "munge"
    munge.mkdir()
    os.chown(munge, munge_user.pw_uid, munge_user.pw_gid)
    for sub in ("state", "spool"):
        (base / sub).mkdir()
    host = socket.gethostname().split(".")[0]
    socket_path = munge / "munge.socket"
    conf = base / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=ntkcheck-test",
        f"SlurmctldHost={host}(127.0.0.1)",
        "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", f"AuthInfo=socket={socket_path}", "CredType=cred/munge",
        f"StateSaveLocation={base / 'state'}", f"SlurmdSpoolDir={base / 'spool'}",
        f"SlurmctldPidFile={base / 'slurmctld.pid'}", f"SlurmdPidFile={base / 'slurmd.pid'}",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        f"SlurmctldLogFile={base / 'slurmctld.log'}", f"SlurmdLogFile={base / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/builtin", "ReturnToService=2",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "MinJobAge=600",  # finished jobs stay visible to scontrol while the test reads them
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} State=UNKNOWN",
        f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    env = dict(os.environ, SLURM_CONF=str(conf))
    logs = [base / "slurmctld.log", base / "slurmd.log", munge / "munged.log"]
    procs: list[subprocess.Popen] = []
    try:
        subprocess.run(["runuser", "-u", "munge", "--", _bin("munged"),
                        f"--socket={socket_path}", f"--pid-file={munge / 'munged.pid'}",
                        f"--seed-file={munge / 'munged.seed'}",
                        f"--log-file={munge / 'munged.log'}", f"--key-file={key}"],
                       check=True, timeout=60)
        procs.append(subprocess.Popen([_bin("slurmctld"), "-D", "-i"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen([_bin("slurmd"), "-D", "-N", host], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))

        def idle() -> bool:
            out = subprocess.run([_bin("sinfo"), "-h", "-o", "%T"], env=env, text=True,
                                 capture_output=True, timeout=30)
            return out.returncode == 0 and "idle" in out.stdout

        _wait("the node did not come up idle", idle, 120, logs)
        yield env
    finally:
        subprocess.run([_bin("scancel"), "--full", "--user=root"], env=env,
                       capture_output=True, timeout=60, check=False)
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        pid_file = munge / "munged.pid"
        if pid_file.is_file():
            try:
                os.kill(int(pid_file.read_text().strip()), 15)
            except (ValueError, ProcessLookupError):
                pass
        shutil.rmtree(base, ignore_errors=True)


def _job_state(job: str, env: dict[str, str]) -> str:
    out = subprocess.run([_bin("scontrol"), "show", "job", job], env=env, text=True,
                         capture_output=True, timeout=30).stdout
    states = [w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")]
    return ",".join(states)


def _comparable(records: pd.DataFrame) -> pd.DataFrame:
    out = records.drop(columns=[c for c in IGNORED if c in records.columns])
    out = out.sort_values(list(RECORD_KEY)).reset_index(drop=True)
    return out[sorted(out.columns)].astype(object)


def test_readme_cluster_section_is_the_script_the_test_submits() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("shards.sbatch", "submit.sh"):
        text = (SCRIPTS / name).read_text()
        assert text.strip() in readme, f"README does not show scripts/slurm/{name} as it is"


def test_slurm_job_array_and_merge_equal_the_unsharded_run(slurm, tmp_path) -> None:
    project = tmp_path / "project"
    (project / "claims").mkdir(parents=True)
    (project / "claims" / "test_tiny.py").write_text(CLAIM)
    env = dict(slurm, CLAIMS="claims/", PROFILE="smoke",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{slurm.get('PATH', '')}",
               PYTHONDONTWRITEBYTECODE="1", MPLCONFIGDIR=str(tmp_path / "mpl"))
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_CURRENT_TEST", None)
    out = subprocess.run([str(SCRIPTS / "submit.sh"), "3", "--cpus-per-task=1"], cwd=project,
                         env=env, text=True, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    job, merge = out.stdout.split()
    logs = sorted((project / "reports").glob("slurm-*.out"))
    _wait("the merge job did not finish",
          lambda: _job_state(merge, env) in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"),
          900, logs)
    logs = sorted((project / "reports").glob("slurm-*.out"))
    text = "\n".join(f"--- {p.name}:\n{p.read_text()[-3000:]}" for p in logs)
    assert _job_state(merge, env) == "COMPLETED", text
    shards = [p for p in (project / "reports" / job).iterdir()
              if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")]
    assert len(shards) == 3, text
    assert sorted(load_run(p).meta["shard"] for p in shards) == ["0/3", "1/3", "2/3"]
    assert (project / "reports" / f"{job}.html").is_file(), text
    merged = load_run(project / "reports" / f"{job}-merged")

    whole = subprocess.run([sys.executable, "-m", "pytest", "claims/", "--ntk-profile", "smoke",
                            "--ntk-device", "auto", "--ntk-report", "whole",
                            "-p", "no:cacheprovider"], cwd=project, env=env, text=True,
                           capture_output=True, timeout=600)
    assert whole.returncode in (0, 1), whole.stdout + whole.stderr
    unsharded = load_run(project / "whole" / "latest")
    assert len(merged.records) == len(unsharded.records) > 0
    pd.testing.assert_frame_equal(_comparable(merged.records), _comparable(unsharded.records))
    pd.testing.assert_frame_equal(merged.verdicts()[1], unsharded.verdicts()[1])
    assert (merged.claims["slurm-ntk-at-init"]["outcome"]
            == unsharded.claims["slurm-ntk-at-init"]["outcome"])
    assert "shards_missing" not in merged.meta
