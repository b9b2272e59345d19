"""The HTTP application on its own: the OpenAPI document matches the routes; health answers."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.web.routes import ROUTES, ApiContext, create_app, json_response
from bot.web.openapi import openapi_document


def test_every_route_is_described_and_every_description_is_a_route():
    routes = {(method.lower(), path) for method, path, _ in ROUTES}
    described = {
        (method, path)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method in ("get", "post", "put", "delete", "patch")
    }
    assert routes == described


def test_path_parameters_are_declared():
    for path, item in openapi_document()["paths"].items():
        names = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert names == set(part[1:-1] for part in path.split("/") if part.startswith("{")), path


class _Tokens:
    async def guild_of(self, token: str):
        return None


class _Accounts:
    max_concurrent_jobs = 25  # PIXVERSE_MAX_CONCURRENT_JOBS set above the default 10


async def _invisible(guild_id, channel_id):
    return False


async def _client(problem):
    async def health_problem():
        return problem

    context = ApiContext(accounts=_Accounts(), dispatcher=None, tokens=_Tokens(), channel_visible=_invisible,
                         health_problem=health_problem)
    client = TestClient(TestServer(create_app(context)))
    await client.start_server()
    return client


@pytest.mark.parametrize(
    ("problem", "status", "body"),
    [
        (None, 200, {"status": "ok", "code": 200}),
        ("not connected to the Discord gateway", 503,
         {"status": "unavailable", "error": "not connected to the Discord gateway", "code": 503}),
    ],
)
async def test_healthz(problem, status, body):
    client = await _client(problem)
    try:
        response = await client.get("/healthz")
        assert (response.status, await response.json()) == (status, body)
    finally:
        await client.close()


async def test_the_documented_max_jobs_limit_is_the_configured_one():
    client = await _client(None)
    try:
        response = await client.get("/openapi.json")
        schema = (await response.json())["paths"]["/v1/pixverse/account/{channel}"]["post"]["requestBody"]
        max_jobs = schema["content"]["application/json"]["schema"]["properties"]["maxJobs"]
        assert (max_jobs["minimum"], max_jobs["maximum"]) == (1, 25)
    finally:
        await client.close()


async def test_authorization_is_checked_before_anything_else():
    client = await _client(None)
    try:
        response = await client.post("/v1/pixverse/create", json={}, headers={"Authorization": "Bearer x"})
        assert (response.status, await response.json()) == (401, {"error": "Unauthorized", "code": 401})
    finally:
        await client.close()


def test_an_answer_holding_a_lone_surrogate_is_still_json():
    response = json_response({"error": "Required param channel (\ud800) is not valid Discord channel id", "code": 400},
                             status=400)
    assert (response.status, response.content_type, response.charset) == (400, "application/json", "utf-8")
    assert json.loads(response.body) == {"error": "Required param channel (\ud800) is not valid Discord channel id",
                                         "code": 400}


def test_answers_are_utf8_json_with_characters_as_they_are():
    response = json_response({"error": "caf\u00e9 \U0001f98a"})
    assert response.body == '{"error": "caf\u00e9 \U0001f98a"}'.encode()
