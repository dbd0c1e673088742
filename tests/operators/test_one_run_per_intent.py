"""One Noxus run per intent, against the emulator over HTTP: each test's proof is the emulator's
count of runs created and stopped.

Retries, clears and crashes are played the way Airflow plays them: a new operator object per try,
the same ``task_state_store`` (Airflow 3.3+), a higher try number.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from support.noxus_tasks import (
    DictStateStore,
    FakeTaskInstance,
    defer_only,
    make_context,
    run_task,
    use_fast_connection,
)
from support.noxus_tasks import make_operator as operator

from airflow_provider_noxus._compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_3_PLUS, AirflowException
from airflow_provider_noxus.exceptions import NoxusRunError
from airflow_provider_noxus.run_identity import RUN_RECORD_KEY

needs_store = pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="task_state_store exists from Airflow 3.3")


def created(emu: Any) -> int:
    return int(emu.control.counters()["runs_created_total"])


def stops(emu: Any) -> dict[str, int]:
    return dict(emu.control.counters()["stops"])


def try_context(store: DictStateStore | None, try_number: int, max_tries: int = 3) -> dict[str, Any]:
    """The context of one try; a clear raises ``max_tries`` to ``try_number + retries``, a retry does not."""
    return make_context(FakeTaskInstance(try_number=try_number, max_tries=max_tries), store)


# ---- clears make new runs; retries reattach ------------------------------------------------------


@needs_store
def test_a_clear_after_success_makes_one_new_run_with_its_own_output(emu: Any) -> None:
    store = DictStateStore()
    first = try_context(store, 1)
    assert run_task(operator(emu, "echo", {"text": "monday"}), first) == {"text": "monday"}
    cleared = try_context(store, 2)
    assert run_task(operator(emu, "echo", {"text": "monday"}), cleared) == {"text": "monday"}
    assert created(emu) == 2
    assert cleared["ti"].xcom["run_id"] != first["ti"].xcom["run_id"]
    assert store.values[RUN_RECORD_KEY]["run_id"] == cleared["ti"].xcom["run_id"]


@needs_store
def test_a_clear_while_the_run_goes_on_stops_it_and_makes_a_new_one(emu: Any) -> None:
    # Airflow may start the cleared task's new try before the old trigger's on_kill has stopped the
    # old run: the new try must not reattach to it (it would then see it stopped and fail).
    store = DictStateStore()
    first = try_context(store, 1, max_tries=3)
    defer_only(operator(emu, "slow", {"seconds": 1}), first)
    old_run = first["ti"].xcom["run_id"]
    cleared = try_context(store, 2, max_tries=2 + 3)
    assert run_task(operator(emu, "slow", {"seconds": 1}), cleared) == {"slept": 1}
    assert cleared["ti"].xcom["run_id"] != old_run
    assert created(emu) == 2
    assert stops(emu) == {old_run: 1}


@needs_store
def test_a_clear_after_editing_the_inputs_runs_the_new_inputs(emu: Any) -> None:
    store = DictStateStore()
    run_task(operator(emu, "echo", {"text": "old"}), try_context(store, 1))
    assert run_task(operator(emu, "echo", {"text": "new"}), try_context(store, 2)) == {"text": "new"}
    assert created(emu) == 2
    assert stops(emu) == {}, "a delivered run is history: nothing to stop"


@needs_store
def test_inputs_edited_while_the_run_goes_on_stop_it_and_make_a_new_one(emu: Any) -> None:
    store = DictStateStore()
    first = try_context(store, 1)
    defer_only(operator(emu, "slow", {"seconds": 30}), first)  # the try is lost while the run goes on
    old_run = first["ti"].xcom["run_id"]
    assert run_task(operator(emu, "slow", {"seconds": 0.1}), try_context(store, 2)) == {"slept": 0.1}
    assert created(emu) == 2
    assert stops(emu) == {old_run: 1}


@needs_store
def test_a_changed_workflow_stops_the_old_run_and_makes_a_new_one(emu: Any) -> None:
    store = DictStateStore()
    first = try_context(store, 1)
    defer_only(operator(emu, "slow", {"seconds": 30}), first)
    old_run = first["ti"].xcom["run_id"]
    assert run_task(operator(emu, "echo", {"text": "hi"}), try_context(store, 2)) == {"text": "hi"}
    assert created(emu) == 2
    assert stops(emu) == {old_run: 1}


@needs_store
def test_a_retry_with_the_same_intent_reattaches_even_in_blocking_mode(emu: Any) -> None:
    store = DictStateStore()
    defer_only(operator(emu, "slow", {"seconds": 0.5}), try_context(store, 1))
    retry = operator(emu, "slow", {"seconds": 0.5}, deferrable=False)
    assert run_task(retry, try_context(store, 2)) == {"slept": 0.5}
    assert created(emu) == 1


# ---- a create whose answer is lost ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "extras"),
    [
        ({"mode": "timeout", "seconds": 2.5}, {"timeout": 1}),
        ({"mode": "truncate"}, {}),
        ({"mode": "cut_json"}, {}),
        ({"mode": "502"}, {}),
    ],
    ids=["read-timeout", "truncated-200", "cut-json-200", "proxy-502-html"],
)
@pytest.mark.parametrize("use_sync_endpoint", [False, True], ids=["async-create", "sync-create"])
def test_a_lost_create_answer_is_adopted_in_the_same_try(
    emu: Any,
    monkeypatch: pytest.MonkeyPatch,
    fault: dict[str, Any],
    extras: dict[str, Any],
    use_sync_endpoint: bool,
) -> None:
    connection_extras = {"retry_attempts": 2, "max_backoff": 0.2, "timeout": 10, **extras}
    use_fast_connection(monkeypatch, emu, extra=connection_extras)
    endpoint = "create_run_sync" if use_sync_endpoint else "create_run"
    emu.control.add_fault(endpoint, "lose_answer", **fault)
    store = DictStateStore() if AIRFLOW_V_3_3_PLUS else None
    context = try_context(store, 1)
    task = operator(emu, "echo", {"text": "lost"}, use_sync_endpoint=use_sync_endpoint)
    assert run_task(task, context) == {"text": "lost"}
    assert created(emu) == 1
    assert stops(emu) == {}


@needs_store
def test_a_lost_answer_not_found_in_time_is_adopted_by_the_next_try(emu: Any) -> None:
    emu.control.add_fault("create_run", "lose_answer", mode="502")
    emu.control.add_fault("list_runs", "status", status=503, count=-1)  # the first try cannot look
    store = DictStateStore()
    with pytest.raises(NoxusRunError, match="looks for it again"):
        run_task(operator(emu, "echo", {"text": "later"}), try_context(store, 1))
    assert store.values[RUN_RECORD_KEY]["sent_at"] is not None
    emu.control.clear_faults()
    retry = try_context(store, 2)
    assert run_task(operator(emu, "echo", {"text": "later"}), retry) == {"text": "later"}
    assert created(emu) == 1
    assert store.values[RUN_RECORD_KEY]["run_id"] == retry["ti"].xcom["run_id"]


def test_a_run_with_other_inputs_is_never_adopted(emu: Any) -> None:
    task = operator(emu, "echo", {"text": "mine"})
    task.hook.create_run(task.workflow_id, {"text": "someone else's"})  # made at the same time
    emu.control.add_fault("create_run", "status", status=502)  # refused before any run was made
    with pytest.raises(NoxusRunError, match="no run made by it was found"):
        run_task(task, try_context(None, 1))
    assert created(emu) == 1


# ---- kills ------------------------------------------------------------------------------------------


def test_a_kill_during_the_create_stops_the_run_once_it_is_made(emu: Any) -> None:
    # The answer is held 1.5 s after the run is made; the kill lands in that window, from another
    # thread as from Airflow's SIGTERM handler (the create then goes on and gets its answer).
    emu.control.add_fault("create_run", "lose_answer", mode="timeout", seconds=1.5)
    task = operator(emu, "slow", {"seconds": 30})

    def kill_once_created() -> None:
        deadline = time.monotonic() + 10
        while created(emu) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        task.on_kill()

    killer = threading.Thread(target=kill_once_created)
    killer.start()
    try:
        with pytest.raises(AirflowException, match="killed while Noxus run"):
            task.execute(try_context(None, 1))
    finally:
        killer.join(timeout=15)
    assert created(emu) == 1
    assert list(stops(emu).values()) == [1]


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="Airflow 3's task timeout")
def test_a_create_cut_short_by_execution_timeout_leaves_its_run_to_the_next_try(emu: Any) -> None:
    # Without the create's answer the run cannot be proven this task's: it is not stopped (it could
    # be another task's identical run); the record keeps the create's window for the next try.
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.timeout import timeout

    emu.control.add_fault("create_run", "lose_answer", mode="timeout", seconds=3)
    store = DictStateStore() if AIRFLOW_V_3_3_PLUS else None
    task = operator(emu, "slow", {"seconds": 1})
    started = time.monotonic()
    with pytest.raises(AirflowTaskTimeout), timeout(1):
        task.execute(try_context(store, 1))
    assert time.monotonic() - started < 10
    assert created(emu) == 1
    assert stops(emu) == {}
    if store is not None:
        retry = try_context(store, 2)
        assert run_task(operator(emu, "slow", {"seconds": 1}), retry) == {"slept": 1}
        assert created(emu) == 1, "the next try adopted the run of the cut-short create"
        assert stops(emu) == {}
