"""The registry of long operations: started, followed by id, kept across a restart."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from ringkv.clock import Clock
from ringkv.errors import AdminConflictError, AdminRequestError
from ringkv.node import operations
from ringkv.node.operations import DONE, FAILED, INTERRUPTED, OPERATIONS_FILE, RUNNING, Operations


def run(coro):
    return asyncio.run(coro)


def test_an_operation_reports_progress_and_its_result(tmp_path):
    async def scenario():
        ops = Operations("n1", str(tmp_path), Clock())
        gate = asyncio.Event()

        async def work(progress):
            progress.update(total=4, phase="copying")
            for _ in range(3):
                progress.advance()
            await gate.wait()
            progress.advance()
            return {"copied": 4}

        op = ops.start("repair", work)
        await asyncio.sleep(0)
        seen = ops.get(op.id).as_dict()
        assert (seen["state"], seen["done"], seen["total"], seen["phase"]) == (RUNNING, 3, 4, "copying")
        assert [o.id for o in ops.list(running_only=True)] == [op.id]
        gate.set()
        finished = await ops.wait(op.id, timeout_s=5)
        assert (finished.state, finished.result, finished.done) == (DONE, {"copied": 4}, 4)
        assert ops.list(running_only=True) == []

    run(scenario())


def test_the_eta_is_the_time_left_at_the_current_rate(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(operations.time, "monotonic", lambda: now[0])

    async def scenario():
        ops = Operations("n1", str(tmp_path), Clock())
        gate = asyncio.Event()

        handle = []

        async def work(progress):
            handle.append(progress)
            progress.update(total=10, phase="copying")
            await gate.wait()
            return {}

        op = ops.start("repair", work)
        await asyncio.sleep(0)
        assert ops.get(op.id).as_dict()["eta_s"] is None  # nothing done yet: no rate to go by
        now[0] += 4.0
        handle[0].advance(4)
        assert ops.get(op.id).as_dict()["eta_s"] == 6.0  # 4 units in 4 s, 6 left
        gate.set()
        finished = await ops.wait(op.id, timeout_s=5)
        assert finished.as_dict()["eta_s"] is None

    run(scenario())


def test_a_second_operation_of_the_same_kind_is_refused_while_one_runs(tmp_path):
    async def scenario():
        ops = Operations("n1", str(tmp_path), Clock())
        gate = asyncio.Event()

        async def work(progress):
            await gate.wait()

        first = ops.start("decommission", work)
        with pytest.raises(AdminConflictError, match=f"decommission {first.id} is running"):
            ops.start("decommission", work)
        with pytest.raises(AdminConflictError):
            ops.start("cleanup", work, conflicts=["decommission"])
        gate.set()
        await ops.wait(first.id)
        ops.start("decommission", work)
        gate.set()

    run(scenario())


def test_a_failing_operation_is_failed_with_its_error(tmp_path):
    async def scenario():
        ops = Operations("n1", str(tmp_path), Clock())

        async def work(progress):
            raise AdminConflictError("n3 down: cleanup runs only when every member of the ring is up")

        op = await ops.wait(ops.start("cleanup", work).id, timeout_s=5)
        assert op.state == FAILED and "n3 down" in op.error

    run(scenario())


def test_an_unknown_id_names_the_node(tmp_path):
    ops = Operations("n1", str(tmp_path), Clock())
    with pytest.raises(AdminRequestError, match=r"no operation 'n1\.99' on n1"):
        ops.get("n1.99")


def test_a_restart_resumes_what_can_resume_and_interrupts_the_rest(tmp_path):
    async def first_life():
        ops = Operations("n1", str(tmp_path), Clock())

        async def forever(progress):
            progress.update(total=10, done=4)
            await asyncio.Event().wait()

        a = ops.start("join", forever, params={"seeds": ["n2"]})
        b = ops.start("repair", forever)
        await asyncio.sleep(0.01)
        await ops.close()
        return a.id, b.id

    join_id, repair_id = run(first_life())
    with open(os.path.join(tmp_path, OPERATIONS_FILE)) as f:
        assert {o["id"]: o["state"] for o in json.load(f)["operations"]} == {join_id: RUNNING, repair_id: RUNNING}

    async def second_life():
        ops = Operations("n1", str(tmp_path), Clock())
        resumed_with = []

        def resume_join(params):
            resumed_with.append(params)

            async def rest(progress):
                assert progress.done == 4
                progress.update(done=10)
                return {"status": "normal"}
            return rest

        ops.resume_with("join", resume_join)
        ops.resume_interrupted()
        join = await ops.wait(join_id, timeout_s=5)
        assert (join.state, join.resumed, join.done, resumed_with) == (DONE, 1, 10, [{"seeds": ["n2"]}])
        repair = ops.get(repair_id)
        assert repair.state == INTERRUPTED and "start it again" in repair.error
        fresh = ops.start("repair", lambda progress: asyncio.sleep(0))
        assert fresh.id not in (join_id, repair_id)  # ids are never reused
        await ops.wait(fresh.id)

    run(second_life())


def test_history_is_bounded(tmp_path):
    async def scenario():
        ops = Operations("n1", str(tmp_path), Clock(), finished_kept_max_count=3)
        for _ in range(6):
            await ops.wait(ops.start("repair", lambda progress: asyncio.sleep(0)).id)
        return [op.id for op in ops.list()]

    assert run(scenario()) == ["n1.6", "n1.5", "n1.4"]


def test_an_unreadable_state_file_starts_an_empty_history(tmp_path):
    (tmp_path / OPERATIONS_FILE).write_text("{not json")
    assert Operations("n1", str(tmp_path), Clock()).list() == []
