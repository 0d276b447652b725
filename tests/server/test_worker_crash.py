"""A worker killed under load: gunicorn forks a replacement, which is ready within seconds (the arbiter has
already imported the code), ``/readyz`` says 503 until its model is loaded, and the published client's retries
carry a caller through: 50 sequential sie-sdk ``score`` calls, the worker SIGKILLed in the middle, all 50 return
the scores the engine gives in process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

from sie import DEFAULT_MODEL, Reranker
from sie.testing.server import HttpClient, ServerProcess
from tests.server.test_sdk_compat import clients_python  # noqa: F401 (a fixture)

SCRIPT = Path(__file__).with_name("sdk_crash_examples.py")
KILL_AT_CALL = 20
# Documents per call: enough that a call is still in flight when the worker dies, few enough to keep CI short.
DOCUMENTS = 10
READY_WITHIN_S = 5.0


def _worker_pids(server: ServerProcess) -> list[int]:
    return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", server.log)]


def _expected_scores(path) -> list[dict[str, float]]:
    """What sdk_crash_examples.py's calls must return: the same inputs scored in process."""
    reranker = Reranker(path, device="cpu")
    expected = []
    for call in range(50):
        query = {"text": f"question {call} about rivers and the history of science"}
        items = [{"id": f"d{i}", "text": f"document {i} of call {call}: " + "water energy river city history "
                  * (1 + i % 9)} for i in range(DOCUMENTS)]
        expected.append({entry["item_id"]: entry["score"] for entry in reranker.score(query, items)["scores"]})
    return expected


def test_the_sdk_client_is_carried_through_a_worker_kill(clients_python, default_model_path):  # noqa: F811
    with ServerProcess(["--device", "cpu", "--model", DEFAULT_MODEL], env={"HF_HUB_OFFLINE": "1"}) as server:
        victim = _worker_pids(server)[-1]
        script = subprocess.Popen([clients_python, SCRIPT, server.url, DEFAULT_MODEL, str(DOCUMENTS)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": ""})
        lines = []
        for line in script.stdout:
            lines.append(line)
            if line.strip() == f"call {KILL_AT_CALL}":
                break
        time.sleep(0.05)  # the call is on its way, or already in the batcher
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()

        # Readiness, on a connection of its own: 503 while the replacement loads its model, then 200.
        readiness, probe = [], HttpClient(server.port, timeout_s=10)
        while time.monotonic() - killed < 30:
            try:
                status = probe.get("/readyz").status
            except OSError:
                status = 0
            readiness.append(status)
            if status == 200 and len(_worker_pids(server)) > 1:
                break
            time.sleep(0.05)
        ready_after = time.monotonic() - killed

        rest, errors = script.communicate(timeout=300)
        assert script.returncode == 0, errors[-4000:]
        out = json.loads((lines + rest.splitlines())[-1])
        log = server.log

    assert f"Worker (pid:{victim}) was sent SIGKILL" in log
    assert readiness[-1] == 200 and 503 in readiness, readiness
    assert ready_after < READY_WITHIN_S, f"the replacement worker was ready after {ready_after:.1f} s"
    expected = _expected_scores(default_model_path)
    assert len(out["results"]) == 50
    for call, (got, want) in enumerate(zip(out["results"], expected, strict=True)):
        assert got.keys() == want.keys(), call
        np.testing.assert_allclose([got[key] for key in want], list(want.values()), rtol=0, atol=1e-5,
                                   err_msg=f"call {call}")
