"""Server-Sent Events: frame shapes, order, resume with ``etag``, late subscribers, keep-alive."""

from __future__ import annotations

import requests

from airflow_provider_noxus.emulator.runs import parse_event_id
from emulator.helpers import Api, parse_sse


def data_frames(frames: list[dict]) -> list[dict]:
    return [frame for frame in frames if "comment" not in frame]


def test_stream_of_a_run_from_queued_to_the_final_frame(api: Api) -> None:
    run = api.create_ok("echo", {"text": "a"})

    frames = data_frames(api.events(run["id"]))

    assert all(frame["_event"] == "message" and frame["type"] == "state" for frame in frames)
    assert frames[0]["data"]["status"] == "queued"
    assert frames[-1]["data"]["workflow_status"] == "completed"
    assert frames[-1]["data"]["status"] == "completed"
    assert all("workflow_status" not in frame["data"] for frame in frames[:-1])
    assert {"status", "progress_details"} <= set(frames[1]["data"])
    node_events = [
        (f["data"]["node"]["id"], f["data"]["node"]["status"]) for f in frames if "node" in f["data"]
    ]
    [node_id] = api.run(run)["progress_details"]["executed_nodes"]
    assert node_events == [(node_id, "running"), (node_id, "completed")]


def test_redis_ids_grow(api: Api) -> None:
    frames = data_frames(api.events(api.create_ok("summarize", {"document": "d"})["id"]))

    ids = [parse_event_id(frame["redisId"]) for frame in frames]

    assert None not in ids
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_summarize_streams_many_small_content_frames(api: Api) -> None:
    run = api.create_ok("summarize", {"document": "d"})

    frames = data_frames(api.events(run["id"]))

    content = [frame["data"] for frame in frames if frame["type"] == "content"]
    assert len(content) >= 10
    assert {(c["id"], c["status"]) for c in content} == {(content[0]["id"], "running")}
    assert "".join(c["content"] for c in content) == api.run(run)["output"]["summary"]


def test_failed_and_stopped_runs_end_with_their_workflow_status(api: Api) -> None:
    failed = api.create_ok("fail", {})
    slow = api.create_ok("slow", {"seconds": 30})
    api.session.post(api.url(f"/v1/runs/{slow['id']}/stop"))

    assert data_frames(api.events(failed["id"]))[-1]["data"]["workflow_status"] == "failed"
    assert data_frames(api.events(slow["id"]))[-1]["data"]["workflow_status"] == "stopped"


def test_human_review_stream_shows_the_pause(api: Api) -> None:
    frames = data_frames(
        api.events(api.create_ok("human_review", {"text": "a", "feedback_delay": 0.2})["id"])
    )

    statuses = [frame["data"]["status"] for frame in frames]

    assert "awaiting_human_feedback" in statuses
    assert statuses.index("awaiting_human_feedback") < len(statuses) - 1
    assert statuses[-1] == "completed"


def test_late_subscriber_gets_the_whole_log_including_the_final_frame(api: Api) -> None:
    run = api.create_ok("echo", {"text": "a"})
    live = data_frames(api.events(run["id"]))

    late = data_frames(api.events(run["id"]))

    assert late == live


def test_etag_replays_only_the_frames_after_it(api: Api) -> None:
    run = api.create_ok("summarize", {"document": "d"})
    frames = data_frames(api.events(run["id"]))
    cut = len(frames) // 2

    resumed = data_frames(api.events(run["id"], etag=frames[cut]["redisId"]))

    assert resumed == frames[cut + 1 :]


def test_etag_of_the_final_frame_replays_nothing(api: Api) -> None:
    run = api.create_ok("echo", {"text": "a"})
    frames = data_frames(api.events(run["id"]))

    assert data_frames(api.events(run["id"], etag=frames[-1]["redisId"])) == []


def test_bad_etag_is_a_422(api: Api) -> None:
    run = api.create_ok("echo", {"text": "a"})

    response = api.session.get(api.url(f"/v1/runs/{run['id']}/events"), params={"etag": "yesterday"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "etag"]


def test_keep_alive_comments_while_idle(api: Api) -> None:
    run = api.create_ok("slow", {"seconds": 30})
    seen: list[str] = []
    with api.session.get(api.url(f"/v1/runs/{run['id']}/events"), stream=True, timeout=20) as response:
        for line in response.iter_lines(decode_unicode=True):
            seen.append(line)
            if seen.count(": keep-alive") == 2:
                break
    api.session.post(api.url(f"/v1/runs/{run['id']}/stop"))

    frames = parse_sse(seen)
    assert {"comment": "keep-alive"} in frames
    assert data_frames(frames)[0]["data"]["status"] == "queued"


def test_open_streams_are_counted(api: Api) -> None:
    run = api.create_ok("slow", {"seconds": 30})
    with requests.get(
        api.url(f"/v1/runs/{run['id']}/events"),
        headers={"X-API-Key": api.session.headers["X-API-Key"]},
        stream=True,
    ) as response:
        lines = response.iter_lines()
        next(lines)
        assert api.emu.control.counters()["open_streams"] == 1
    api.session.post(api.url(f"/v1/runs/{run['id']}/stop"))
