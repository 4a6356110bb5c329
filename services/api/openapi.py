"""`/openapi.json`, generated from the router and the pydantic models the views use.

Views declare themselves with `@operation(...)`; the document lists every route of the app,
and a route without a declaration is an error at start-up, not a silent gap."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from services.api.schemas import Problem

H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])
_ATTR = "__openapi_operation__"


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    auth: str | None = "apiKey"  # "apiKey", "adminToken" or None (public)
    headers: dict[str, str] = field(default_factory=dict)
    #: headers of the answers, by status (beside X-Request-ID on every one and Retry-After
    #: on 429s and 503s)
    response_headers: dict[int, dict[str, str]] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


def operation(**kwargs: Any) -> Callable[[H], H]:
    def mark(handler: H) -> H:
        setattr(handler, _ATTR, Operation(**kwargs))
        return handler

    return mark


_EVERY_ANSWER = {"X-Request-ID": "the request's id: the client's own if it sent a plain one "
                 "(1-128 letters, digits and ._:-), else a new one; a 500 names it"}
_RETRY = {"Retry-After": "seconds to wait before trying again"}


def _errors(op: Operation) -> dict[int, str]:
    found = {422: "Validation failed (the `errors` list names every field)"}
    if op.auth is not None:
        found[401] = "Missing or wrong credentials"
    if op.auth == "apiKey":
        found[429] = "Rate limit reached (see Retry-After)"
    if op.body is not None:
        found.update({400: "Malformed JSON", 413: "Body over 1 MiB", 415: "Not JSON"})
    return found


def build(app: web.Application, *, title: str, version: str) -> dict[str, Any]:
    ops: list[tuple[str, str, Operation]] = []
    for route in app.router.routes():
        info = route.get_info()
        path = info.get("formatter") or info.get("path")
        if route.method == "HEAD" or path is None or "prefix" in info:
            continue
        op = getattr(route.handler, _ATTR, None)
        if op is None:
            raise RuntimeError(f"{route.method} {path} has no @operation declaration")
        ops.append((route.method.lower(), path, op))
    models: set[type[BaseModel]] = {Problem}
    for _, _, op in ops:
        models.update(m for m in op.responses.values() if m is not None)
        if op.body is not None:
            models.add(op.body)
    bodies = {op.body for _, _, op in ops}
    keyed: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "validation" if m in bodies else "serialization")
        for m in sorted(models, key=lambda m: m.__name__)]
    refs, schema = models_json_schema(keyed, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for method, path, op in ops:
        params: list[dict[str, Any]] = [
            {"name": seg[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for seg in path.split("/") if seg.startswith("{")
        ]
        if op.query is not None:
            q = op.query.model_json_schema()
            params += [{"name": name, "in": "query", "required": False,
                        "schema": _inline(prop)}
                       for name, prop in q["properties"].items()]
        params += [{"name": name, "in": "header", "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    "description": text} for name, text in op.headers.items()]
        responses: dict[str, Any] = {}
        for status, model in op.responses.items():
            content = {"application/json": {"schema": refs[(model, "serialization")]}} \
                if model is not None else None
            responses[str(status)] = {"description": model.__name__ if model else "OK",
                                      **({"content": content} if content else {})}
        problem = {"application/problem+json": {"schema": refs[(Problem, "serialization")]}}
        for status, text in _errors(op).items():
            responses.setdefault(str(status), {"description": text, "content": problem})
        for status_text, response in responses.items():
            status = int(status_text)
            described = {**_EVERY_ANSWER, **(_RETRY if status in (429, 503) else {}),
                         **op.response_headers.get(status, {})}
            response["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                                   for name, text in described.items()}
        entry: dict[str, Any] = {"summary": op.summary, "responses": responses,
                                 "tags": list(op.tags)}
        if params:
            entry["parameters"] = params
        if op.body is not None:
            entry["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": refs[(op.body, "validation")]}}}
        entry["security"] = [{op.auth: []}] if op.auth else []
        paths.setdefault(path, {})[method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "A workspace's API key"},
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "The operator's admin token"},
            },
        },
    }


def _inline(prop: dict[str, Any]) -> dict[str, Any]:
    """Query parameters are plain strings on the wire; keep type hints, drop $refs."""
    if "$ref" in prop or "allOf" in prop:
        return {"type": "string"}
    return {k: v for k, v in prop.items() if k != "title"}
