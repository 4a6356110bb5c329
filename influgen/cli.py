"""`influgen`: the command-line tool for integrators and operators (on top of the SDK).

Exit codes: 0 success; 1 the API refused (4xx/5xx), or a waited-for video did not end
ready/approved; 2 usage; 3 the API or Kafka could not be reached."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
from aiokafka.errors import KafkaError
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from influgen.client import ApiError, Client
from shared.events import TOPIC_DLQ
from shared.kafka import read_topic


class CliSettings(BaseSettings):
    """Defaults from the environment (`source .run/stack.env` sets them all)."""

    model_config = SettingsConfigDict(env_prefix="INFLUGEN_", extra="ignore")
    api_url: str = "http://127.0.0.1:8080"
    api_key: str | None = None
    admin_token: str | None = None
    kafka_bootstrap_servers: str = "127.0.0.1:9092"


def _out(args: argparse.Namespace, value: Any, human: str) -> None:
    if args.json:
        if isinstance(value, BaseModel):
            print(value.model_dump_json(indent=2))
        else:
            print(json.dumps(value, indent=2, default=str))
    else:
        print(human)


def _video_line(v: Any) -> str:
    job = v.job
    extra = f", queue {job.queue_position}" if job.queue_position else ""
    media = f"\n  video: {v.media.video_url}\n  thumbnail: {v.media.thumbnail_url}" \
        if v.media else ""
    error = f"\n  error: {job.error.code}: {job.error.message}" if job.error else ""
    return (f"{v.id}  {v.status}  job {job.state} {job.progress}%{extra}  "
            f"{v.duration_seconds}s {v.aspect_ratio} {v.model_id}/{v.quality_tier}"
            f"{media}{error}")


async def _follow(client: Client, video_id: Any, args: argparse.Namespace) -> int:
    """Show live progress until generation is over; exit code by outcome."""
    tty = sys.stderr.isatty() and not args.json
    async for event in client.events(video_id):
        data = event["data"]
        job = data["job"]
        queue = ""
        if data["status"] == "queued":  # the stream carries no queue position: ask for it
            position = (await client.video(video_id)).job.queue_position
            queue = f"  (queue position {position})" if position else ""
        filled = job["progress"] // 5
        line = (f"[{'#' * filled}{' ' * (20 - filled)}] {job['progress']:3d}%  "
                f"{data['status']} / {job['state']}{queue}")
        if tty:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        elif not args.json:
            print(line, file=sys.stderr)
    if tty:
        print(file=sys.stderr)
    video = await client.video(video_id)
    _out(args, video, _video_line(video))
    return 0 if video.status in ("ready", "approved") else 1


async def run(args: argparse.Namespace, cfg: CliSettings) -> int:
    if args.group == "events":
        return await _events(args, cfg)
    if args.group == "dlq":
        return await _dlq(args, cfg)
    async with Client(args.url or cfg.api_url, args.api_key or cfg.api_key,
                      admin_token=args.admin_token or cfg.admin_token) as client:
        if args.group == "admin":
            if args.action == "replace-key":
                ws = await client.replace_key(args.workspace)
            else:
                ws = await client.create_workspace(args.name, credits=args.credits,
                                                   sandbox=args.sandbox,
                                                   idempotency_key=args.idempotency_key)
            _out(args, ws, f"workspace {ws.id}\napi key (shown once): {ws.api_key}")
        elif args.group == "characters" and args.action == "create":
            ch = await client.create_character(args.name, review_mode=args.review_mode)
            _out(args, ch, f"{ch.id}  {ch.name}  {ch.review_mode}")
        elif args.group == "characters":
            chars = await client.characters()
            _out(args, [c.model_dump(mode="json") for c in chars],
                 "\n".join(f"{c.id}  {c.name}  {c.review_mode}" for c in chars) or "(none)")
        elif args.group == "credits":
            c = await client.credits()
            _out(args, c, f"balance {c.balance}, reserved {c.reserved}, "
                          f"available {c.available}")
        elif args.group == "videos":
            return await _videos(client, args)
    return 0


async def _videos(client: Client, args: argparse.Namespace) -> int:
    if args.action == "create":
        fields = {k: v for k, v in {
            "character_id": args.character, "scene_description": args.scene,
            "platform": args.platform, "type": args.type, "duration_seconds": args.duration,
            "aspect_ratio": args.aspect_ratio, "model_id": args.model,
            "quality_tier": args.tier, "planned_date": args.planned_date,
            "caption": args.caption, "hashtags": args.hashtag, "cta": args.cta,
        }.items() if v is not None}
        video = await client.create_video(idempotency_key=args.idempotency_key, **fields)
        if args.wait:
            return await _follow(client, video.id, args)
        _out(args, video, _video_line(video))
    elif args.action == "get":
        video = await client.video(args.id)
        _out(args, video, _video_line(video))
    elif args.action == "list":
        filters = {k: v for k, v in {"status": args.status, "platform": args.platform,
                                     "character_id": args.character, "limit": args.limit,
                                     "cursor": args.cursor}.items() if v is not None}
        page = await client.videos(**filters)
        _out(args, page, "\n".join(_video_line(v) for v in page.items) or "(none)")
    elif args.action == "watch":
        return await _follow(client, args.id, args)
    elif args.action == "cancel":
        video = await client.cancel(args.id)
        _out(args, video, _video_line(video))
    elif args.action == "review":
        video = await client.review(args.id, args.decision, note=args.note)
        _out(args, video, _video_line(video))
    return 0


async def _events(args: argparse.Namespace, cfg: CliSettings) -> int:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    bootstrap = args.bootstrap or cfg.kafka_bootstrap_servers
    if args.action == "publish":
        event = dict(args.event)
        event.setdefault("event_id", str(uuid4()))
        event.setdefault("event_type", "video.requested")
        event.setdefault("request_id", str(uuid4()))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait("influgen.video.requested.v1",
                                         json.dumps(event).encode(),
                                         key=str(event["request_id"]).encode())
        finally:
            await producer.stop()
        _out(args, {"request_id": event["request_id"]}, f"published {event['request_id']}")
        return 0
    consumer = AIOKafkaConsumer(
        "influgen.video.completed.v1", bootstrap_servers=bootstrap, group_id=None,
        auto_offset_reset="earliest" if args.from_beginning else "latest")
    await consumer.start()
    shown = 0
    try:
        async for record in consumer:
            event = json.loads(record.value)
            if args.workspace and event.get("workspace_id") != args.workspace:
                continue
            if args.type and event.get("event_type") not in args.type:
                continue
            video = event["video"]
            _out(args, event, f"{event['occurred_at']}  {event['event_type']:15}  "
                              f"{video['id']}  {video['status']}")
            shown += 1
            if args.max and shown >= args.max:
                break
    finally:
        await consumer.stop()
    return 0


async def _letters(bootstrap: str) -> list[dict[str, Any]]:
    """The letters on the DLQ, oldest first. Read as plain JSON, not as `DeadLetter`: letters
    written before a field was added to it (`original_size`) are letters all the same."""
    letters = []
    for record in await read_topic(bootstrap, TOPIC_DLQ):
        try:
            letter = json.loads(record.value)
        except ValueError:
            continue
        if isinstance(letter, dict) and letter.get("event_type") == "message.dead_lettered":
            letters.append(letter)
    return sorted(letters, key=lambda x: str(x.get("occurred_at", "")))


async def _dlq(args: argparse.Namespace, cfg: CliSettings) -> int:
    """`dlq list`: the letters on the DLQ; `dlq replay ID`: publish a letter's message again
    to the topic it came from, as it was (after the fix of what refused it: the consumers
    are safe against redelivery, and a message refused again gets a new letter)."""
    from aiokafka import AIOKafkaProducer

    bootstrap = args.bootstrap or cfg.kafka_bootstrap_servers
    letters = await _letters(bootstrap)
    if args.action == "list":
        shown = [x for x in letters
                 if not args.source_topic or x.get("source_topic") == args.source_topic]
        if args.max:
            shown = shown[-args.max:]
        _out(args, shown, "\n".join(
            f"{x.get('occurred_at')}  {x.get('event_id')}  {x.get('consumer')}  "
            f"{x.get('source_topic')}[{x.get('partition')}]@{x.get('offset')}  "
            f"{str(x.get('reason'))[:120]}" for x in shown) or "(none)")
        return 0
    found = next((x for x in letters if x.get("event_id") == args.event_id), None)
    if found is None:
        print(f"influgen: no dead letter {args.event_id} on {TOPIC_DLQ}", file=sys.stderr)
        return 1
    if found.get("original_truncated"):
        print(f"influgen: letter {args.event_id} kept only the beginning of its message "
              f"({found.get('original_size')} bytes): it cannot be replayed", file=sys.stderr)
        return 1
    key_b64 = found.get("original_key_b64")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            str(found["source_topic"]), base64.b64decode(found["original_value_b64"]),
            key=base64.b64decode(key_b64) if key_b64 is not None else None)
    finally:
        await producer.stop()
    where = {"topic": sent.topic, "partition": sent.partition, "offset": sent.offset}
    _out(args, where, f"replayed {args.event_id} to {sent.topic}[{sent.partition}]"
                      f"@{sent.offset}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="influgen", description=__doc__.splitlines()[0])
    p.add_argument("--url", help="API base URL (INFLUGEN_API_URL)")
    p.add_argument("--api-key", help="workspace API key (INFLUGEN_API_KEY)")
    p.add_argument("--admin-token", help="operator token (INFLUGEN_ADMIN_TOKEN)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    groups = p.add_subparsers(dest="group", required=True)

    admin = groups.add_parser("admin").add_subparsers(dest="action", required=True)
    ws = admin.add_parser("create-workspace")
    ws.add_argument("name")
    ws.add_argument("--credits", type=int, default=0)
    ws.add_argument("--sandbox", action="store_true")
    ws.add_argument("--idempotency-key", help="sent again, makes no second workspace (409)")
    admin.add_parser("replace-key", help="a new API key; the old one stops working"
                     ).add_argument("workspace")

    chars = groups.add_parser("characters").add_subparsers(dest="action", required=True)
    create = chars.add_parser("create")
    create.add_argument("name")
    create.add_argument("--review-mode", choices=("manual", "autopilot"), default="manual")
    chars.add_parser("list")

    groups.add_parser("credits")

    videos = groups.add_parser("videos").add_subparsers(dest="action", required=True)
    vc = videos.add_parser("create")
    vc.add_argument("--character", required=True)
    vc.add_argument("--scene", required=True)
    vc.add_argument("--platform")
    vc.add_argument("--type")
    vc.add_argument("--duration", type=int)
    vc.add_argument("--aspect-ratio")
    vc.add_argument("--model")
    vc.add_argument("--tier")
    vc.add_argument("--planned-date")
    vc.add_argument("--caption")
    vc.add_argument("--hashtag", action="append")
    vc.add_argument("--cta")
    vc.add_argument("--idempotency-key")
    vc.add_argument("--wait", action="store_true", help="show progress until it is done")
    for name in ("get", "watch", "cancel"):
        videos.add_parser(name).add_argument("id")
    vl = videos.add_parser("list")
    vl.add_argument("--status")
    vl.add_argument("--platform")
    vl.add_argument("--character")
    vl.add_argument("--limit", type=int)
    vl.add_argument("--cursor")
    vr = videos.add_parser("review")
    vr.add_argument("id")
    vr.add_argument("decision", choices=("approve", "reject"))
    vr.add_argument("--note")

    events = groups.add_parser("events").add_subparsers(dest="action", required=True)
    pub = events.add_parser("publish", help="publish a video.requested event (JSON file)")
    pub.add_argument("file", help="a JSON file, or - for standard input")
    pub.add_argument("--bootstrap")
    tail = events.add_parser("tail", help="print completion events")
    tail.add_argument("--workspace")
    tail.add_argument("--type", action="append")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max", type=int)
    tail.add_argument("--bootstrap")

    dlq = groups.add_parser("dlq", help="dead letters: list, replay").add_subparsers(
        dest="action", required=True)
    dl = dlq.add_parser("list", help="the letters on the DLQ, oldest first")
    dl.add_argument("--source-topic")
    dl.add_argument("--max", type=int, help="only the newest N")
    dl.add_argument("--bootstrap")
    dr = dlq.add_parser("replay", help="publish a letter's message again to its topic")
    dr.add_argument("event_id")
    dr.add_argument("--bootstrap")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.group == "events" and args.action == "publish":
        try:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
            args.event = json.loads(text)
            if not isinstance(args.event, dict):
                raise ValueError("the event must be a JSON object")
        except (OSError, ValueError) as exc:
            print(f"influgen: cannot read the event: {exc}", file=sys.stderr)
            return 2
    try:
        return asyncio.run(run(args, CliSettings()))
    except ApiError as exc:
        print(f"influgen: {exc}", file=sys.stderr)
        return 1
    except (aiohttp.ClientConnectionError, OSError) as exc:
        print(f"influgen: cannot reach the service: {exc}", file=sys.stderr)
        return 3
    except KafkaError as exc:
        print(f"influgen: cannot reach Kafka: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
