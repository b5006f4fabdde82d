"""``avisc-eval run`` under a real ``accelerate launch`` on CPU: answers and metrics equal one process's.

It runs the ``accelerate`` console script of this environment, as a user would (its CLI
imports optional libraries such as timm when they are installed; ``-m accelerate.commands.launch``
does not). accelerate 1.x starts ``--cpu`` runs as ONE process (its multi-CPU path needs mpirun);
``--multi_gpu --num_processes 2`` starts two torchrun workers, which the runner joins over
gloo when there is no CUDA. Both launches are checked against an in-process run.
"""

import json
import os
import socket
import subprocess
import sysconfig
from pathlib import Path

import pytest

from avisc_lib.benchmarks.cli import main

pytestmark = pytest.mark.slow  # each launch starts fresh processes: about 50 s per case
RUN = ["run", "pope", "--model", "tiny", "--method", "avisc", "--limit", "22", "--batch-size", "4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    assert main([*RUN, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("launch, processes", [(["--multi_gpu", "--num_processes", "2"], 2), (["--cpu"], 1)])
def test_launched_run_equals_single_process(single, tmp_path, launch, processes):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    accelerate = Path(sysconfig.get_path("scripts")) / "accelerate"
    command = [str(accelerate), "launch", *launch, "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               "-m", "avisc_lib.benchmarks.cli", *RUN, "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"22 of 22 questions to answer on {processes} process(es)" in done.stderr
    assert "TP" in done.stdout and done.stdout.count("pope synthetic/random") == 1  # the main process prints
    metrics = [json.loads((folder / "metrics.json").read_text()) for folder in (tmp_path, single)]
    assert metrics[0] == metrics[1]
    assert (tmp_path / "answers.jsonl").read_text() == (single / "answers.jsonl").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl", "config.json", "metrics.json"]
