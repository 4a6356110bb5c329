"""Typed application keys of the api's aiohttp app."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from faststream.kafka import KafkaBroker

from services.api.auth import KeyCache
from services.api.event_hub import VideoEventHub
from services.api.handlers import IntakeDeps, NewVideo, Workspace
from services.api.ratelimit import RateLimiter
from services.api.settings import ApiSettings
from shared.events import VideoResource
from shared.group_commit import GroupCommit

SETTINGS = web.AppKey("settings", ApiSettings)
POOL = web.AppKey("pool", asyncpg.Pool)
DEPS = web.AppKey("deps", IntakeDeps)
BROKER = web.AppKey("broker", KafkaBroker)
LIMITER = web.AppKey("limiter", RateLimiter)
KEY_CACHE = web.AppKey("key_cache", KeyCache)
HUB = web.AppKey("hub", VideoEventHub)
VIDEO_WRITER = web.AppKey("video_writer", GroupCommit[NewVideo, VideoResource])
WORKSPACE_KEY = web.RequestKey("workspace", Workspace)


def workspace_of(request: web.Request) -> Workspace:
    return request[WORKSPACE_KEY]
