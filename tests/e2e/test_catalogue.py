"""The catalogue (bot/dispatch/catalogue.py) is the one declaration of each PixVerse command: the slash
commands the bot registers, the OpenAPI document and the validator must agree with it, verb by verb."""

from __future__ import annotations

import pytest

from bot.dispatch.catalogue import CATALOGUE, Param
from bot.dispatch.models import Verb
from bot.errors import ApiError
from bot.web.openapi import ACCOUNT_FIELDS, PRESS_FIELDS, openapi_document

OPTION_TYPES = {"text": 3, "integer": 4}
PATHS = {Verb.CREATE: "/v1/pixverse/create", Verb.CREATE_SINGLE: "/v1/pixverse/create_single",
         Verb.BUTTON: "/v1/pixverse/button"}


def slash_option(param: Param) -> dict:
    """The option Discord's client is told of, as the catalogue says it."""
    option: dict = {"name": param.name, "type": OPTION_TYPES[param.kind], "description": param.description,
                    "required": param.required}
    if param.choices:
        option["choices"] = [{"name": value, "value": value} for value in param.choices]
    discord_names = {"max_length": param.max_length, "min_value": param.minimum, "max_value": param.maximum}
    return option | {key: value for key, value in discord_names.items() if value is not None}


async def test_the_registered_slash_commands_are_the_catalogues(bot, fake):
    registered = {c["name"]: c for c in fake.commands}
    for verb, command in CATALOGUE.items():
        payload = registered[command.slash_name]
        assert payload["description"] == command.description
        seen = [{key: option[key] for key in ("name", "type", "description", "required", "choices", "max_length",
                                             "min_value", "max_value") if key in option}
                for option in payload["options"]]
        # Discord wants required options first; otherwise in the catalogue's order.
        expected = sorted((slash_option(p) for p in command.params), key=lambda o: not o["required"])
        assert seen == expected, verb


def test_the_openapi_bodies_are_the_catalogues():
    document = openapi_document()
    for verb, command in CATALOGUE.items():
        schema = document["paths"][PATHS[verb]]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["required"] == [p.name for p in command.params if p.required]
        for param in command.params:
            field = schema["properties"][param.name]
            assert field["type"] == {"text": "string", "integer": "integer"}[param.kind]
            assert field.get("enum", []) == list(param.choices)
            assert field.get("maxLength") == param.max_length
            assert (field.get("minimum"), field.get("maximum")) == (param.minimum, param.maximum)
            for alias in param.aliases:
                assert schema["properties"][alias]["deprecated"] is True
        declared = {name for p in command.params for name in (p.name, *p.aliases)}
        request_fields = PRESS_FIELDS if verb is Verb.BUTTON else ACCOUNT_FIELDS
        assert set(schema["properties"]) - declared == {"replyUrl", "replyRef", *request_fields}


def refusal(verb: Verb, body: dict) -> str:
    with pytest.raises(ApiError) as info:
        CATALOGUE[verb].validate(body)
    assert info.value.code == 400
    return info.value.error


@pytest.mark.parametrize("verb", [Verb.CREATE, Verb.CREATE_SINGLE])
def test_the_validator_applies_each_parameters_declared_rule(verb):
    command = CATALOGUE[verb]
    valid = {"prompt": "a fox", "style": "Anime"}
    assert command.validate(valid) == valid
    for param in command.params:
        label = f"Required param {param.name}" if param.required else f"Param {param.name}"
        if param.required:
            assert refusal(verb, {**valid, param.name: "  "}) == f"{label} is missing or empty"
        if param.choices:
            assert refusal(verb, {**valid, param.name: "Cubist"}) == (
                f"{label} (Cubist) is not one of {', '.join(param.choices)}")
        if param.max_length is not None:
            assert refusal(verb, {**valid, param.name: "x" * (param.max_length + 1)}) == (
                f"{label} is longer than {param.max_length} characters")
        if param.kind == "integer":
            for wrong in (param.minimum - 1, param.maximum + 1, "12", True):
                assert refusal(verb, {**valid, param.name: wrong}).endswith(
                    f"must be an integer from {param.minimum} to {param.maximum}")
            assert command.validate({**valid, param.name: param.maximum})[param.name] == param.maximum


def test_seed_value_is_the_name_and_seed_still_works_over_http():
    command = CATALOGUE[Verb.CREATE_SINGLE]
    base = {"prompt": "a fox", "style": "Anime"}
    assert command.validate({**base, "seed_value": 7}) == {**base, "seed_value": 7}
    assert command.validate({**base, "seed": 7}) == {**base, "seed_value": 7}  # older scripts
    assert refusal(Verb.CREATE_SINGLE, {**base, "seed": -1}) == "Param seed (-1) must be an integer from 0 to 2147483647"
    assert refusal(Verb.CREATE, {**base, "seed_value": 7}) == "Param seed_value is supported only by create_single"
    assert refusal(Verb.CREATE, {**base, "seed": 7}) == "Param seed is supported only by create_single"
    assert refusal(Verb.CREATE_SINGLE, {**base, "seed_value": 5, "seed": -7}) == (
        "Param seed_value and seed are one parameter: send seed_value only")
    # What PixVerse is sent: its own option names, a job stored under the older name included.
    assert command.pixverse_options({**base, "seed_value": 7}) == {**base, "seed_value": 7}
    assert command.pixverse_options({**base, "seed": 7}) == {**base, "seed_value": 7}
    assert refusal(Verb.CREATE, {**base, "character": "Rei", "style": "Realistic"}) == (
        "Param character is supported only with style Anime, not Realistic")
