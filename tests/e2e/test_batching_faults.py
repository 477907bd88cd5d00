"""A model service killed while batches are in flight (services as separate processes, batching on, tiny models).

Under load at concurrency 32 the classifier and the embedder batch concurrent calls (once with the gateway
sending each call alone, once with the gateway's own batch calls). Killing one (frozen for
0.3 s first, so calls are surely inside it, then SIGKILL) fails the searches that were inside it with a fast
UNAVAILABLE, nothing else; the gateway stays up and, once the
service is back, searches succeed again, batched as before (the batch statistics that the service, or the gateway, logs
at shutdown show batches of more than one request).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import time

import grpc
import pytest

from testkit.grpc_load import BackgroundLoad
from testkit.process_stack import ProcessStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BATCHING = {"BATCH_MAX_DELAY_MS": "5", "BATCH_MAX_SIZE": "32", "LOG_LEVEL": "INFO"}
RECOVERY_S = 10.0


@pytest.fixture(scope="module", params=["model services", "gateway"])
def stack(request, tmp_path_factory) -> ProcessStack:
    """Batches in the model services (the gateway sends each call alone), or the gateway's batch calls."""
    gateway_batch = "1" if request.param == "model services" else "32"
    running = ProcessStack(
        tmp_path_factory.mktemp("batching-faults"),
        gateway_env={"GATEWAY_BATCH_MAX_SIZE": gateway_batch, "GATEWAY_LOG_LEVEL": "INFO"},
        classifier_env={f"CLASSIFIER_{k}": v for k, v in BATCHING.items()},
        embedder_env={f"EMBEDDER_{k}": v for k, v in BATCHING.items()},
    ).start()
    running.batching_in = request.param  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        running.stop()
    if request.param == "gateway":  # the gateway logs its batch statistics when it stops
        for peer in ("classifier", "embedder"):
            stats = [line for line in batch_stats(running, "gateway") if f"gateway to {peer}" in line]
            assert stats and mean_batch(stats[-1]) > 1.0, stats


def mean_batch(stats_line: str) -> float:
    return float(stats_line.split("mean ")[1].split(",")[0])


def batch_stats(stack: ProcessStack, name: str) -> list[str]:
    """The batch statistics lines the service logged at its clean shutdowns."""
    lines = []
    for line in stack.log(name).read_text().splitlines():
        if line.startswith("{") and "batching:" in line:
            lines.append(json.loads(line)["message"])
    return lines


@pytest.mark.parametrize("victim", ["embedder", "classifier"])
def test_a_model_service_killed_with_batches_in_flight(stack, victim):
    background = BackgroundLoad(stack.address("gateway"), concurrency=32)
    background.wait_for_calls(64, time.monotonic(), "the load running", grpc.StatusCode.OK)
    # Frozen first, so the kill surely finds calls inside it (being decoded, queued for a batch, or in one): a fault
    # of a fixed length, well inside the gateway's 2 s deadline, not a wait for something to happen.
    os.kill(stack.pid(victim), signal.SIGSTOP)
    time.sleep(0.3)
    killed_at = time.monotonic()
    stack.kill(victim)
    background.wait_for_calls(16, killed_at + 0.5, "searches answered while the victim is down")
    restart_at = time.monotonic()
    stack.restart(victim)
    back_at = time.monotonic()
    background.wait_for_calls(32, back_at + 2.0, "searches answered after the restart")
    result = background.stop()

    assert stack.processes["gateway"].poll() is None
    unexpected = {c.name for c in result.codes} - {"OK", "UNAVAILABLE"}
    assert not unexpected, result.codes
    # The calls in flight at the kill (their batch was inside the victim, or queued for it) end fast.
    # UNAVAILABLE, not DEADLINE_EXCEEDED (checked above): they failed because the service went away, not by
    # waiting out the gateway's 2 s deadline. (How long that took is test_faults.py's check, at lower load.)
    in_flight = [(s, d, c) for s, d, c in result.calls if s < killed_at < s + d]
    assert in_flight, "no call was in flight at the kill"
    failed = collections.Counter(c.name for _, _, c in in_flight)
    assert failed["UNAVAILABLE"] > 0, failed
    # While it is down (until its relaunch: it answers during its warm-up), UNAVAILABLE; once back, OK again.
    down = [c for s, d, c in result.calls if killed_at + 0.5 < s and s + d < restart_at]
    assert down and all(c is grpc.StatusCode.UNAVAILABLE for c in down), collections.Counter(down)
    late = [c for s, _, c in result.calls if s > back_at + 2.0]
    assert late and all(c is grpc.StatusCode.OK for c in late), collections.Counter(late)
    print(f"\n{victim} killed with {len(in_flight)} searches in flight: {dict(failed)}; back after restart")

    if stack.batching_in == "model services":
        # The restarted service batched the same load: stop it cleanly and read its statistics.
        stack.processes[victim].terminate()
        stack.processes[victim].wait(15)
        stats = batch_stats(stack, victim)
        assert stats and mean_batch(stats[-1]) > 1.0, stats
        stack.restart(victim)
