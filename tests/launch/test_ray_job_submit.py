"""The README's Ray lines against a real cluster: `ray start --head` (loopback, ports of its
own, token auth, a PATH without the venv, as when nobody activated it), then the README's
`ray job submit` line with 2 workers on the tiny preset. A second submission that asks for
more CPUs than the head has must fail fast, in one line.

The head runs with `--block` in its own process group, and the test kills that group: `ray
stop` would stop every Ray cluster of this user on the machine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from doc_commands import commands

ROOT = Path(__file__).resolve().parents[2]
# A real Ray head takes 2-4 minutes: `make test-long` runs it, `make test` keeps the local-head
# Ray Train tests (tests/launch/test_ray.py).
pytestmark = [pytest.mark.slow, pytest.mark.long]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _readme_line(prefix: str) -> str:
    found = [c.text for c in commands("README.md") if c.text.startswith(prefix)]
    assert len(found) == 1, f"the README should show one `{prefix}` line, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head as the README starts it, on 127.0.0.1; yields (env, dashboard address)."""
    ray_bin = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "ray"
    if not ray_bin.exists():
        import sys
        ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.exists():
        pytest.skip("no `ray` command next to this Python")
    pytest.importorskip("ray.dashboard.modules.job")  # ray[default]: the job server
    home = Path(tempfile.mkdtemp(prefix="srhome"))  # the token lands in HOME/.ray, not the user's
    temp_dir = Path(tempfile.mkdtemp(prefix="sray"))  # short: Ray's socket paths are length-capped
    gcs, dashboard, agent, client, metrics, grpc = _free_ports(6)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
           "RAY_USAGE_STATS_ENABLED": "0"}
    generate = _readme_line("ray get-auth-token")
    subprocess.run([str(ray_bin), *shlex.split(generate)[1:]], env=env, check=True, capture_output=True)
    start = _readme_line("ray start --head")
    start = start.replace("--port=6379", f"--port={gcs}").replace("--dashboard-host=0.0.0.0",
                                                                  "--dashboard-host=127.0.0.1")
    argv = [str(ray_bin), *shlex.split(start)[1:], "--block", "--node-ip-address=127.0.0.1",
            f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={grpc}", f"--metrics-export-port={metrics}",
            f"--ray-client-server-port={client}", "--num-cpus=2", f"--temp-dir={temp_dir}",
            "--disable-usage-stats"]
    log = open(home / "head.log", "w")
    head = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # it answers (401 without the token): it is up
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the Ray head did not start:\n{(home / 'head.log').read_text()[-3000:]}")
                time.sleep(1)
        yield env, address, ray_bin
    finally:
        try:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(head.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(ray_head, overrides: dict[str, str], tail: str, timeout: float):
    """Run the README's `ray job submit` line with `overrides` (README text -> test text)."""
    env, address, ray_bin = ray_head
    token = (Path(env["HOME"]) / ".ray" / "auth_token").read_text().strip()
    export = _readme_line("export RAY_AUTH_MODE=token")
    assert "RAY_AUTH_TOKEN=..." in export
    line = _readme_line("ray job submit").replace("http://HEAD:8265", address)
    for readme_text, test_text in overrides.items():
        assert readme_text in line, f"the README's submit line no longer has {readme_text!r}: {line}"
        line = line.replace(readme_text, test_text)
    line = f"{line} {tail}".replace("ray job submit", shlex.quote(str(ray_bin)) + " job submit", 1)
    script = f"{export.replace('...', shlex.quote(token))}\n{line}\n"
    return subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_readme_ray_job_submit_line_trains_on_a_real_head(ray_head, tiny_data, tmp_path):
    run_dir = tmp_path / "shared" / "runs" / "tiny"
    proc = _submit(ray_head, {
        "--config configs/dlrm_criteo.yaml": "--config configs/tiny.yaml",
        "--num-workers 16": "--num-workers 2",
        "--dataset.path=/shared/criteo": f"--dataset.path={tiny_data}",
        "--run-dir /shared/runs/dlrm": f"--run-dir {run_dir}",
        "--ray.use_gpu=true": "--ray.use_gpu=false",
    }, tail="--ray.cpus_per_worker=0.5 --train.num_threads=1", timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and re.search(r"Job 'raysubmit_\w+' succeeded", out), out[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] > 0
    assert summary["auc"] - 0.5 >= 0.5 * (summary["teacher_auc"] - 0.5), summary
    # The job's log: no library chatter from the workers (it is in library.log), and after
    # the summary only Ray's own closing lines.
    lines = out.splitlines()
    assert not [line for line in lines if "Successfully loaded" in line or "Sharding spec" in line]
    last_step = max(i for i, line in enumerate(lines) if re.search(r"\bstep \d+/\d+ epoch", line))
    summary_at = next(i for i, line in enumerate(lines) if f"test AUC {summary['auc']:.4f}" in line)
    assert summary_at > last_step
    assert not [line for line in lines[summary_at:] if "RayTrainWorker" in line], lines[summary_at:]
    assert "rank 1 " in (run_dir / "library.log").read_text()


def test_a_job_asking_for_more_cpus_than_the_head_has_fails_in_one_line(ray_head, tiny_data, tmp_path):
    start = time.monotonic()
    proc = _submit(ray_head, {
        "--config configs/dlrm_criteo.yaml": "--config configs/tiny.yaml",
        "--num-workers 16": "--num-workers 2",
        "--dataset.path=/shared/criteo": f"--dataset.path={tiny_data}",
        "--run-dir /shared/runs/dlrm": f"--run-dir {tmp_path / 'run'}",
        "--ray.use_gpu=true": "--ray.use_gpu=false",
    }, tail="--ray.cpus_per_worker=4", timeout=120)
    took = time.monotonic() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and re.search(r"Job 'raysubmit_\w+' failed", out), out[-4000:]
    # Ray prints the job's log twice (streamed, then in its status message): one line each time.
    errors = {line for line in out.splitlines() if line.startswith("shardrec: error:")}
    assert len(errors) == 1, out[-4000:]
    assert "= 8 CPUs, but the Ray cluster has 2" in errors.pop()
    assert "Traceback" not in out, out[-4000:]
    assert took < 30, f"the refusal took {took:.0f} s"
