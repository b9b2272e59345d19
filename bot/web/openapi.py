"""The OpenAPI 3 description of the HTTP API (a test keeps it equal to the routes)."""

from __future__ import annotations

from functools import cache
from typing import Any

from bot.dispatch.catalogue import CATALOGUE
from bot.dispatch.models import Verb
from bot.dispatch.validation import REPLY_LIMIT

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "errorDetails": {"type": "string"}, "code": {"type": "integer"}},
    "required": ["error", "code"],
}
_ACCOUNT = {
    "type": "object",
    "properties": {
        "discord": {"type": "string", "description": "the token, masked to its last 4 characters"},
        "server": {"type": "string"},
        "channel": {"type": "string"},
        "maxJobs": {"type": "integer"},
        "error": {"type": "string"},
        "errorDetails": {"type": "string"},
    },
}
def _account_body(max_jobs: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "discord": {"type": "string", "description": "Discord user token of the PixVerse account"},
            "server": {"type": "string", "description": "Discord server id (the API token's server)"},
            "channel": {"type": "string", "description": "Discord channel id, equal to the path's"},
            "maxJobs": {"type": "integer", "minimum": 1, "maximum": max_jobs,
                        "description": "at most PIXVERSE_MAX_CONCURRENT_JOBS of this bot"},
        },
        "required": ["discord", "server", "channel", "maxJobs"],
    }
_REPLY = {
    "replyUrl": {"type": "string", "maxLength": REPLY_LIMIT, "description": "http(s) URL the finished job is POSTed to"},
    "replyRef": {"type": "string", "maxLength": REPLY_LIMIT},
}
# useapi's optional per-request account, as v1 clients send it (empty means absent).
ACCOUNT_FIELDS = {
    "channel": {"type": "string", "description": "run on this channel's configured account"},
    "server": {"type": "string", "description": "with channel: the API token's server"},
    "discord": {"type": "string", "description": "run on the configured account with this token"},
    "maxJobs": {"type": "integer", "description": "with channel or discord: must be that account's maxJobs;"
                                                  " alone: ignored"},
}
# What v1 clients send with every press: no prompt can reach PixVerse, the token must be the job's account's.
PRESS_FIELDS = {
    "prompt": {"type": "string", "description": "must be empty: PixVerse asks for a button's prompt in a window"
                                                " only the presser's Discord app receives"},
    "discord": {"type": "string", "description": "the token of the account that made the job, or empty"},
    "maxJobs": {"type": "integer", "description": "ignored"},
}
_BUTTON_BODY = CATALOGUE[Verb.BUTTON].openapi_body({**PRESS_FIELDS, **_REPLY})
_JOB = {
    "type": "object",
    "properties": {
        name: {"type": kind}
        for name, kind in (
            ("jobid", "string"), ("verb", "string"), ("status", "string"), ("created", "string"),
            ("updated", "string"), ("prompt", "string"), ("discord", "string"), ("server", "string"),
            ("channel", "string"), ("maxJobs", "integer"), ("messageId", "string"), ("content", "string"),
            ("error", "string"), ("errorDetails", "string"), ("code", "integer"), ("queuePosition", "integer"),
            ("replyUrl", "string"), ("replyRef", "string"), ("timestamp", "string"),
        )
    }
    | {"buttons": {"type": "array", "items": {"type": "string"}}, "attachments": {"type": "array", "items": {"type": "object"}},
       "embeds": {"type": "array", "items": {"type": "object"}}},
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_AUTH_ERRORS = {"401": _error("Unauthorized: missing, unknown or revoked API token")}
_CHANNEL = {"name": "channel", "in": "path", "required": True, "schema": {"type": "string"}}
_JOBID = {"name": "jobid", "in": "query", "required": True, "schema": {"type": "string"}}
_JOB_REF = {"$ref": "#/components/schemas/Job"}


MEDIA_TYPES = ("application/json", "multipart/form-data", "application/x-www-form-urlencoded")


def _body(schema: dict[str, Any], media_types: tuple[str, ...] = MEDIA_TYPES) -> dict[str, Any]:
    # useapi's v1 clients send forms (numbers as text, empty fields absent) as well as JSON.
    return {"required": True, "content": {media: {"schema": schema} for media in media_types}}


def _job_post(summary: str, schema: dict[str, Any], *, images: bool = False) -> dict[str, Any]:
    """A job request; one with images is a multipart/form-data body (the images as file parts)."""
    return {
        "summary": summary,
        "requestBody": _body(schema, ("multipart/form-data",) if images else MEDIA_TYPES),
        "responses": {
            "200": _json("The job (status created; queuePosition when it waits)", _JOB_REF),
            "400": _error("Invalid parameters"),
            **_AUTH_ERRORS,
            "404": _error("No account configured, or job not found"),
            "409": _error("The job's account is out of rotation"),
            "413": _error("Body over 64 KiB (beside its images, each at most 10 MB)" if images else "Body over 64 KiB"),
            "415": _error("A Content-Type other than JSON or a form"),
            "429": _error("All accounts busy; executingJobs lists the executing job ids"),
            "503": _error("Every account is out of rotation"),
        },
    }


def _get_job(summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [_JOBID],
        "responses": {"200": _json("The job", _JOB_REF), "400": _error("Invalid jobid"), **_AUTH_ERRORS,
                      "404": _error("Job not found"), "409": _error("Job already ended")},
    }


@cache
def openapi_document(max_jobs: int = 10) -> dict[str, Any]:
    """The document; ``max_jobs`` is the bot's PIXVERSE_MAX_CONCURRENT_JOBS (the maxJobs limit)."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "PixVerse account bot HTTP API",
            "version": "1",
            "description": "useapi.net's PixVerse v1 paths, served by the self-hosted bot. Authorization: Bearer <API token>"
            " from /pixverse-api-token; a token sees only its own server.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR, "Account": _ACCOUNT, "Job": _JOB},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/pixverse/account/{channel}": {
                "parameters": [_CHANNEL],
                "post": {
                    "summary": "Create or update the channel's PixVerse account (the seed)",
                    "requestBody": _body(_account_body(max_jobs)),
                    "responses": {"204": {"description": "Saved"}, "400": _error("Validation error, in the seed's order"),
                                  **_AUTH_ERRORS, "413": _error("Body over 64 KiB"),
                                  "415": _error("A Content-Type other than JSON or a form"),
                                  "503": _error("Discord could not be reached to check the token, or the bot"
                                                " is not connected to Discord yet")},
                },
                "get": {
                    "summary": "One configuration",
                    "responses": {"200": _json("The configuration", {"$ref": "#/components/schemas/Account"}),
                                  "400": _error("Invalid channel id"), **_AUTH_ERRORS, "404": _error("Configuration not found")},
                },
                "delete": {
                    "summary": "Delete one configuration",
                    "responses": {"204": {"description": "Deleted"}, "400": _error("Invalid channel id"), **_AUTH_ERRORS,
                                  "404": _error("Configuration not found")},
                },
            },
            "/v1/pixverse/account": {
                "get": {
                    "summary": "All configurations of the token's server, keyed by channel",
                    "responses": {
                        "200": _json("Configurations", {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Account"}}),
                        **_AUTH_ERRORS,
                        "404": _error("Configuration not found. To create configuration use pixverse/account/channel."),
                    },
                },
            },
            **{
                f"/v1/pixverse/{verb.value}": {"post": _job_post(
                    command.description, command.openapi_body({**ACCOUNT_FIELDS, **_REPLY}),
                    images=bool(command.images))}
                for verb, command in CATALOGUE.items() if verb is not Verb.BUTTON
            },
            "/v1/pixverse/button": {"post": _job_post("Press a result button of a completed job", _BUTTON_BODY)},
            "/v1/pixverse/jobs": {
                "get": {
                    "summary": "Executing job ids of the token's server",
                    "responses": {"200": _json("Job ids", {"type": "array", "items": {"type": "string"}}), **_AUTH_ERRORS},
                },
            },
            "/v1/pixverse/jobs/": {"get": _get_job("One job (useapi job fields)")},
            "/v1/pixverse/jobs/cancel": {"get": _get_job("Cancel a job")},
            "/v1/pixverse/jobs/cancel/": {"get": _get_job("Cancel a job")},
            "/healthz": {
                "get": {
                    "summary": "Health: the database answers and the gateway is connected",
                    "security": [],
                    "responses": {"200": _json("Healthy", {"type": "object"}), "503": _error("Unhealthy, with the reason")},
                },
            },
            "/openapi.json": {
                "get": {"summary": "This document", "security": [], "responses": {"200": _json("OpenAPI", {"type": "object"})}},
            },
        },
    }
