"""``kill -USR2`` on a pool process logs where its coroutines wait (worker.stacks): what the
fault tests' stall report shows of a run that holds work and does not finish it."""

from __future__ import annotations

from tests.faults.conftest import (
    FaultStack,
    batch_in_flight,
    held_work,
    where_holders_wait,
    worker_pids,
)
from tests.support.origin import Origin
from tests.support.receiver import Receiver


def test_a_pool_process_holding_work_logs_its_await_chains_on_sigusr2(
    fault_stack: FaultStack, slow_origin: Origin, receiver: Receiver
) -> None:
    request_id = batch_in_flight(fault_stack, slow_origin, receiver, fraction=0.1)
    main = fault_stack.processes["worker"].pid
    pool = worker_pids(fault_stack) - {main}
    runs: list[str] = []
    for _ in range(5):  # the holder may be between two chunks when the signal lands
        holder, _ = held_work(fault_stack, request_id, pool)
        lines = where_holders_wait(fault_stack, {holder})
        assert lines and all(line.startswith(f"holder {holder} task ") for line in lines), lines
        runs = [line for line in lines if "process_products" in line]
        if runs:
            break
    assert runs, "no dump showed the run of a chunk"
    # Outermost first: the task's coroutine, down through the run to what it awaits at the end.
    chain = runs[0].split(": ", 1)[1].split(" <- ")[::-1]
    assert "products.py" in chain[0] and chain[0].endswith(" process_products"), chain
    assert any(frame.endswith(" _run_chunk") for frame in chain), chain
    assert "Future" in chain[-1] or "Task" in chain[-1], chain
