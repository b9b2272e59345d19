"""The catalogue (bot/dispatch/catalogue.py) is the one declaration of each PixVerse command: the slash
commands the bot registers, the OpenAPI document and the validator must agree with it, verb by verb."""

from __future__ import annotations

import pytest

from bot.dispatch.catalogue import CATALOGUE, Param
from bot.dispatch.models import Verb
from bot.errors import ApiError
from bot.web.openapi import ACCOUNT_FIELDS, PRESS_FIELDS, openapi_document

OPTION_TYPES = {"text": 3, "integer": 4, "image": 11}
PATHS = {Verb.CREATE: "/v1/pixverse/create", Verb.CREATE_SINGLE: "/v1/pixverse/create_single",
         Verb.ANIMATE: "/v1/pixverse/animate", Verb.MEME_FACE: "/v1/pixverse/meme_face",
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
    assert set(PATHS) == set(CATALOGUE)
    for verb, command in CATALOGUE.items():
        content = document["paths"][PATHS[verb]]["post"]["requestBody"]["content"]
        # An image travels as a file part: such a command takes multipart/form-data only.
        assert set(content) == ({"multipart/form-data"} if command.images else
                                {"application/json", "multipart/form-data", "application/x-www-form-urlencoded"})
        schema = content["multipart/form-data"]["schema"]
        assert schema["required"] == [p.name for p in command.params if p.required]
        for param in command.params:
            field = schema["properties"][param.name]
            assert field["type"] == {"text": "string", "integer": "integer", "image": "string"}[param.kind]
            assert field.get("format") == ("binary" if param.kind == "image" else None)
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


def valid_body(verb: Verb) -> dict:
    from bot.dispatch.images import Image

    return {"prompt": "a fox", **{p.name: Image.given("a.png", PNG) for p in CATALOGUE[verb].images},
            **({"style": "Anime"} if verb in (Verb.CREATE, Verb.CREATE_SINGLE) else {})}


@pytest.mark.parametrize("verb", [verb for verb in CATALOGUE if verb is not Verb.BUTTON])
def test_the_validator_applies_each_parameters_declared_rule(verb):
    command = CATALOGUE[verb]
    valid = valid_body(verb)
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
        if param.kind not in ("integer", "image") and not param.choices:
            assert refusal(verb, {**valid, param.name: "a\x00b"}) == f"{label} must not contain a NUL character"
            assert refusal(verb, {**valid, param.name: "a\ud800b"}) == f"{label} must be text"
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
    assert refusal(Verb.CREATE, {**base, "seed_value": 7}) == (
        "Param seed_value is supported only by create_single, animate, meme_face")
    assert refusal(Verb.CREATE, {**base, "seed": 7}) == "Param seed is supported only by create_single, animate, meme_face"
    assert refusal(Verb.CREATE_SINGLE, {**base, "seed_value": 5, "seed": -7}) == (
        "Param seed_value and seed are one parameter: send seed_value only")
    # What PixVerse is sent: its own option names, a job stored under the older name included.
    assert command.pixverse_options({**base, "seed_value": 7}) == {**base, "seed_value": 7}
    assert command.pixverse_options({**base, "seed": 7}) == {**base, "seed_value": 7}
    assert refusal(Verb.CREATE, {**base, "character": "Rei", "style": "Realistic"}) == (
        "Param character is supported only with style Anime, not Realistic")


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 64


def test_images_are_told_apart_by_their_bytes_not_their_names():
    from bot.dispatch.images import IMAGE_LIMIT, Image

    animate = CATALOGUE[Verb.ANIMATE]
    # A PNG named .txt passes; the type is read from the bytes.
    for data, kind in ((PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp")):
        params = animate.validate({"image": Image.given("notes.txt", data)})
        assert params["image"].data == data and params["image"].content_type == kind
    assert refusal(Verb.ANIMATE, {"image": Image.given("cat.png", b"just some text")}) == (
        "Param image (cat.png) is not a PNG, JPEG or WEBP image")
    assert refusal(Verb.ANIMATE, {}) == "Required param image is missing or empty"
    assert refusal(Verb.ANIMATE, {"image": ""}) == "Required param image is missing or empty"
    assert refusal(Verb.ANIMATE, {"image": Image.given("empty.png", b"")}) == "Required param image is missing or empty"
    assert refusal(Verb.ANIMATE, {"image": "https://example.com/cat.png"}) == (
        "Param image must be a file: send it as a file part of a multipart/form-data body")
    big = PNG + b"\x00" * (IMAGE_LIMIT + 1 - len(PNG))
    assert refusal(Verb.ANIMATE, {"image": Image.given("big.png", big)}) == "Param image (big.png) is larger than 10 MB"
    assert animate.validate({"image": Image.given("max.png", big[:IMAGE_LIMIT])})["image"].size == IMAGE_LIMIT
    assert refusal(Verb.MEME_FACE, {"prompt": "a dancer"}) == "Required param face is missing or empty"
    # A path in the name is not kept.
    assert CATALOGUE[Verb.MEME_FACE].validate(
        {"face": Image.given("../../etc/me.jpg", JPEG), "prompt": "x"})["face"].filename == "me.jpg"


def test_animate_and_meme_face_parameters():
    from bot.dispatch.images import Image

    image = Image.given("cat.png", PNG)
    animate = CATALOGUE[Verb.ANIMATE]
    assert animate.validate({"image": image, "motion": 10, "seed_value": 0, "hd_quality": "Yes"}) == {
        "image": image, "motion": 10, "seed_value": 0, "hd_quality": "Yes"}
    assert refusal(Verb.ANIMATE, {"image": image, "motion": 0}) == "Param motion (0) must be an integer from 1 to 10"
    assert refusal(Verb.ANIMATE, {"image": image, "motion": 11}) == "Param motion (11) must be an integer from 1 to 10"
    assert refusal(Verb.ANIMATE, {"image": image, "hd_quality": "yes"}) == "Param hd_quality (yes) is not one of Yes, No"
    assert refusal(Verb.CREATE, {"prompt": "a", "style": "Anime", "motion": 5}) == (
        "Param motion is supported only by animate")
    assert refusal(Verb.MEME_FACE, {"face": image, "prompt": "a", "style": "Anime"}) == (
        "Param style is supported only by create, create_single")
    assert refusal(Verb.MEME_FACE, {"face": image}) == "Required param prompt is missing or empty"
    # PixVerse is sent the image itself under its option's name, from the store's copy.
    params = {"image": image.summary(), "prompt": "it blinks", "motion": 3}
    assert animate.pixverse_options(params, {"image": image}) == {"image": image, "prompt": "it blinks", "motion": 3}
    assert animate.describe(params) == "animate “it blinks” (cat.png)"
