"""The event stream as Wikimedia's EventStreams serves it, against a real server in each
async mode: stream names, aliases, comma lists and a trailing slash; KafkaSSE's ids (the
next position), built by hand by offset and by time; unknown query parameters ignored;
`/?spec` and `/v2/ui`; `--cors-origin '*'`; and `--max-connection-s`, whose closes real
clients resume across with nothing lost or repeated."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from stream_processor.protocol.event_stream import TOPIC, offset_of_id
from stream_processor.sources.generate import generate_file
from tests.conftest import (
    cli_env,
    in_each_async_mode,
    paced_recording,
    processes_with_marker,
    replay_server,
    run_script,
    wait_until,
)

pytestmark = in_each_async_mode

NAMES = ["recentchange", "recentchange/", "mediawiki.recentchange", "recentchange,mediawiki.recentchange"]


def read_all(url: str, path: str, headers: dict | None = None) -> tuple[list, dict | None, int]:
    """Every message of one connection (as (offset, data)), the `end` data if it came, and
    how many connections it took (httpx-sse does not reconnect: this does, as EventSource)."""
    messages: list[tuple[int, str]] = []
    last_id, connections = None, 0
    with httpx.Client(timeout=30) as client:
        while True:
            connections += 1
            resume = {"Last-Event-ID": last_id} if last_id else {}
            with connect_sse(client, "GET", f"{url}{path}", headers={**(headers or {}), **resume}) as source:
                if source.response.status_code == 204:
                    return messages, None, connections
                assert source.response.status_code == 200, source.response.read()
                for event in source.iter_sse():
                    if event.event == "end":
                        return messages, json.loads(event.data), connections
                    messages.append((offset_of_id(event.id), event.data))
                    last_id = event.id
            assert connections < 200, "the stream never ended"


@pytest.mark.parametrize("name", NAMES)
def test_a_stream_is_served_by_name_alias_comma_list_and_with_a_trailing_slash(small_recording, name):
    lines = small_recording.read_text().splitlines()
    with replay_server(small_recording) as (url, _):
        messages, end, _ = read_all(url, f"/v2/stream/{name}")
    assert [data for _, data in messages] == lines and end == {"count": len(lines), "offset": len(lines)}


def test_an_unknown_stream_is_a_400_naming_the_streams_served(small_recording):
    with replay_server(small_recording) as (url, _):
        answers = [httpx.get(f"{url}/v2/stream/{name}", timeout=10) for name in ("nope", "recentchange,nope")]
    for answer in answers:
        assert answer.status_code == 400 and "mediawiki.recentchange" in answer.json()["error"], answer.text


def test_an_id_built_by_hand_resumes_by_offset_or_by_time_and_then_across_forced_closes(tmp_path):
    lines = [line.decode() for line in paced_recording(tmp_path / "timed.json", count=30, gap_s=2)]
    first_time_ms = json.loads(lines[0])["timestamp"] * 1000

    def by_hand(**position) -> dict:
        return {"Last-Event-ID": json.dumps([{"topic": TOPIC, "partition": 0, **position}])}

    paced = "/v2/stream/recentchange?realtime=true&speed=40"  # 18 events 2 s apart: about a second
    with replay_server(tmp_path / "timed.json", "--max-connection-s", "0.25") as (url, _):
        by_offset, _, offset_connections = read_all(url, paced, by_hand(offset=12))  # the next to read: 12
        # production's ids hold times (useTimestampForId), in both datacenters' topics
        by_time = json.dumps(
            [
                {"topic": TOPIC, "partition": 0, "timestamp": first_time_ms + 2 * 12 * 1000},
                {"topic": "codfw.mediawiki.recentchange", "partition": 0, "timestamp": first_time_ms},
            ]
        )
        by_timestamp, _, time_connections = read_all(url, paced, {"Last-Event-ID": by_time})
        other_topic = httpx.get(
            f"{url}/v2/stream/recentchange",
            headers={"Last-Event-ID": json.dumps([{"topic": "eqiad.mediawiki.page-create", "offset": 1}])},
            timeout=10,
        )
    for received, connections in ((by_offset, offset_connections), (by_timestamp, time_connections)):
        assert [data for _, data in received] == lines[12:]  # nothing lost or repeated across the closes
        assert [offset for offset, _ in received] == list(range(12, 30))
        assert connections >= 3, connections
    assert other_topic.status_code == 404 and "page-create" in other_topic.json()["error"]


def test_unknown_query_parameters_are_ignored_and_known_ones_still_checked(small_recording):
    with replay_server(small_recording) as (url, _):
        busted, _, _ = read_all(url, "/v2/stream/recentchange?_=1700000000000&utm_source=x")
        bad_speed = httpx.get(f"{url}/v2/stream/recentchange?_=1&speed=0", timeout=10)
    assert len(busted) == len(small_recording.read_text().splitlines())
    assert bad_speed.status_code == 400 and "speed" in bad_speed.json()["error"]


def test_the_spec_lists_the_streams_where_tools_read_them_with_the_token_and_the_ui_page_is_served(small_recording):
    with replay_server(small_recording, "--token", "s3cret") as (url, _):
        spec_without_token = httpx.get(f"{url}/?spec", timeout=10)
        spec = httpx.get(f"{url}/?spec", headers={"Authorization": "Bearer s3cret"}, timeout=10)
        page = httpx.get(f"{url}/v2/ui", timeout=10)
        script = httpx.get(f"{url}/v2/streams.js", timeout=10)
        stream = httpx.get(f"{url}/v2/stream/recentchange", timeout=10)
    assert spec_without_token.status_code == 401  # it names the streams served: the token, as all data
    assert spec.status_code == 200
    enum = spec.json()["paths"]["/v2/stream/{streams}"]["get"]["parameters"][0]["schema"]["items"]["enum"]
    assert enum == ["mediawiki.recentchange", "recentchange"]
    assert page.status_code == 200 and "streams.js" in page.text and script.status_code == 200
    assert "content-security-policy" in page.headers
    assert stream.status_code == 401  # the events still need the token


def test_any_origin_may_read_with_cors_origin_star_and_never_with_credentials(small_recording):
    with replay_server(small_recording, "--cors-origin", "*") as (url, _):
        origin = {"Origin": "https://some.page.example"}
        with (
            httpx.Client(timeout=10) as client,
            connect_sse(client, "GET", f"{url}/v2/stream/recentchange", headers=origin) as source,
        ):
            headers = source.response.headers
            first = next(source.iter_sse())
        preflight = httpx.options(f"{url}/v2/stream/recentchange", headers=origin, timeout=10)
    assert headers["access-control-allow-origin"] == "*" and "access-control-allow-credentials" not in headers
    assert first.event == "message"
    assert preflight.headers["access-control-allow-origin"] == "*"


def test_cors_origin_star_with_a_token_is_refused_as_a_usage_error(tmp_path, small_recording):
    refused = run_script(
        "socket_server.py",
        ["--input", str(small_recording), "--port", "0", "--cors-origin", "*", "--token", "x"],
        tmp_path,
        30,
    )
    assert refused.returncode == 2
    assert "--cors-origin '*'" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def test_connections_closed_by_max_connection_s_are_resumed_with_nothing_lost_or_repeated(tmp_path):
    lines = [line.decode() for line in paced_recording(tmp_path / "paced.json", count=40)]
    with replay_server(tmp_path / "paced.json", "--max-connection-s", "0.5") as (url, _):
        messages, end, connections = read_all(url, "/v2/stream/recentchange/?realtime=true&speed=20")
    assert [data for _, data in messages] == lines  # each once, in order
    assert [offset for offset, _ in messages] == list(range(len(lines)))
    assert end is not None and end["offset"] == len(lines) and 0 < end["count"] < len(lines)  # the last connection's
    assert connections >= 3, f"2 s of replay in 0.5 s connections took {connections}"


def test_the_npm_eventsource_client_reads_an_alias_list_across_max_connection_s_closes(tmp_path, js_clients):
    work, node = js_clients
    lines = [line.decode() for line in paced_recording(tmp_path / "paced.json", count=40)]
    marker = uuid.uuid4().hex
    with replay_server(tmp_path / "paced.json", "--max-connection-s", "0.5") as (url, _):
        client = subprocess.run(
            [
                node,
                "eventsource_client.mjs",
                f"{url}/v2/stream/recentchange,mediawiki.recentchange/?realtime=true&speed=20&_=cache-buster",
            ],
            cwd=work,
            env=cli_env(marker),
            capture_output=True,
            text=True,
            timeout=120,
        )
    wait_until(lambda: not processes_with_marker(marker), timeout=10, message="no process left behind")
    assert client.returncode == 0, client.stderr
    printed = [json.loads(line) for line in client.stdout.splitlines() if line.strip()]
    messages, end = printed[:-1], printed[-1]
    assert [m["data"] for m in messages] == lines  # every event once, in order, byte for byte
    assert [offset_of_id(m["id"]) for m in messages] == list(range(len(lines)))
    assert end["end"]["offset"] == len(lines)
    assert client.stderr.count("reconnecting") >= 2, client.stderr  # it was closed on, and resumed


def two_streams(tmp_path) -> tuple[list[dict], list[dict]]:
    """recentchange (an event every 2 s) and revision-create (every 4 s), over the same minute."""
    rc = [json.loads(line) for line in paced_recording(tmp_path / "rc.json", count=30, gap_s=2, seed=3)]
    rev = [json.loads(line) for line in paced_recording(tmp_path / "rev.json", count=15, gap_s=4, seed=5)]
    return rc, rev


def merged_since(rc: list[dict], rev: list[dict], since: int) -> list[dict]:
    """What a merge by time from `since` holds: both streams' later events, ties to the first named."""
    timed = [(e["timestamp"], 0, e) for e in rc] + [(e["timestamp"], 1, e) for e in rev]
    return [event for moment, _, event in sorted(timed, key=lambda t: t[:2]) if moment >= since]


def test_pywikibot_reads_two_streams_since_a_time_across_forced_closes_with_nothing_lost_or_repeated(tmp_path):
    rc, rev = two_streams(tmp_path)
    since = rc[5]["timestamp"]
    expected = merged_since(rc, rev, since)
    flags = ["--stream", f"revision-create={tmp_path / 'rev.json'}", "--max-connection-s", "0.4"]
    marker = uuid.uuid4().hex
    with replay_server(tmp_path / "rc.json", *flags, "--realtime", "--speed", "20") as (url, _):
        client = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).parents[1] / "pywikibot_client.py"),
                url,
                "recentchange,revision-create",
                datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                str(len(expected)),
            ],
            env={**cli_env(marker), "PYWIKIBOT_DIR": str(tmp_path)},
            cwd=tmp_path,  # it writes a throttle.ctrl where it runs
            capture_output=True,
            text=True,
            timeout=120,
        )
        opened = httpx.get(f"{url}/status", timeout=10).json()["event_streams_opened"]
    wait_until(lambda: not processes_with_marker(marker), timeout=10, message="no process left behind")
    assert client.returncode == 0, client.stderr[-2000:]
    assert [json.loads(line) for line in client.stdout.splitlines()] == expected  # once each, in time order
    assert opened >= 4, f"about 2.5 s of replay in 0.4 s connections opened {opened}"


def test_the_npm_eventsource_client_reads_a_comma_list_of_two_streams_across_closes(tmp_path, js_clients):
    work, node = js_clients
    rc, rev = two_streams(tmp_path)
    marker = uuid.uuid4().hex
    flags = ["--stream", f"revision-create={tmp_path / 'rev.json'}", "--max-connection-s", "0.4"]
    with replay_server(tmp_path / "rc.json", *flags) as (url, _):
        client = subprocess.run(
            [node, "eventsource_client.mjs", f"{url}/v2/stream/revision-create,recentchange?realtime=true&speed=20"],
            cwd=work,
            env=cli_env(marker),
            capture_output=True,
            text=True,
            timeout=120,
        )
        opened = httpx.get(f"{url}/status", timeout=10).json()["event_streams_opened"]
    wait_until(lambda: not processes_with_marker(marker), timeout=10, message="no process left behind")
    assert client.returncode == 0, client.stderr
    printed = [json.loads(line) for line in client.stdout.splitlines() if line.strip()]
    messages, end = printed[:-1], printed[-1]
    assert [json.loads(m["data"]) for m in messages] == merged_since(rev, rc, 0)  # revision-create named first
    last = json.loads(messages[-1]["id"])
    assert {p["topic"]: p["offset"] for p in last} == {
        "eqiad.mediawiki.revision-create": len(rev),
        "eqiad.mediawiki.recentchange": len(rc),
    }
    assert end["end"]["count"] > 0 and opened >= 4


def test_the_server_fills_meta_with_where_it_serves_each_event_from(tmp_path):
    generate_file(tmp_path / "es.json", minutes=0.2, seed=4, format="eventstreams", canary_every=5)
    lines = (tmp_path / "es.json").read_bytes().splitlines()
    moved = [json.loads(line) for line in lines]
    for event in moved:  # as if cut from a longer recording: the positions no longer match
        event["meta"].update(topic="codfw.mediawiki.recentchange", offset=event["meta"]["offset"] + 1000)
    (tmp_path / "moved.json").write_text("".join(json.dumps(event) + "\n" for event in moved))
    with replay_server(tmp_path / "es.json", "--stream", f"moved={tmp_path / 'moved.json'}") as (url, _):
        as_recorded, _, _ = read_all(url, "/v2/stream/recentchange")
        merged, _, _ = read_all(url, "/v2/stream/recentchange,moved")
    assert [data.encode() for _, data in as_recorded] == lines  # its meta says so already: byte for byte
    metas = [json.loads(data)["meta"] for _, data in merged]
    assert sorted((m["topic"], m["offset"]) for m in metas) == sorted(
        [("eqiad.mediawiki.recentchange", n) for n in range(len(lines))]
        + [("eqiad.mediawiki.moved", n) for n in range(len(lines))]
    )


def test_a_merge_of_as_many_streams_as_a_server_serves_resumes_from_its_own_longest_ids(tmp_path):
    # 32 streams (the most a server serves), names of 100 characters: each id names all 32
    # positions, about 5 kB, and must come back as a Last-Event-ID the server takes (its
    # parser's limit, and the HTTP server's header line). One event per connection: every
    # id is sent back once.
    names = [f"s{i:02d}-" + "x" * 96 for i in range(31)]
    lines = paced_recording(tmp_path / "rc.json", count=2)
    specs = []
    for i, name in enumerate(names):
        lines += paced_recording(tmp_path / f"{i}.json", count=2, seed=100 + i)
        specs += ["--stream", f"{name}={tmp_path / f'{i}.json'}"]
    received: list[bytes] = []
    last_id, longest = None, 0
    with replay_server(tmp_path / "rc.json", *specs) as (url, _), httpx.Client(timeout=30) as client:
        path = "/v2/stream/" + ",".join(["recentchange", *names])
        for _ in range(len(lines) + 1):
            resume = {"Last-Event-ID": last_id} if last_id else {}
            with connect_sse(client, "GET", f"{url}{path}", headers=resume) as source:
                assert source.response.status_code in (200, 204), source.response.read()
                event = next(iter(source.iter_sse()), None) if source.response.status_code == 200 else None
            if event is None or event.event == "end":
                break
            received.append(event.data.encode())
            last_id, longest = event.id, max(longest, len(event.id))
    assert sorted(received) == sorted(lines)  # each once, across 64 connections
    assert len(json.loads(last_id)) == 32 and longest > 4000


def test_a_server_refuses_more_streams_than_it_can_name_in_one_id(tmp_path):
    paced_recording(tmp_path / "rc.json", count=1)
    specs = [arg for i in range(32) for arg in ("--stream", f"s{i}={tmp_path / 'rc.json'}")]
    refused = run_script(
        "socket_server.py", ["--input", str(tmp_path / "rc.json"), "--port", "0", *specs], tmp_path, 30
    )
    assert refused.returncode == 2 and "at most 32 streams" in refused.stderr, refused.stderr
