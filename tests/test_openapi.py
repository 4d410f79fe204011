"""GET /openapi.json: the contract as OpenAPI 3.1, checked by a real validator
(openapi-spec-validator), the function's real requests and answers (JSON, NDJSON,
errors) validated against the document's schemas with jsonschema, and read by the client."""

from __future__ import annotations

import copy
import dataclasses
import json

import jsonschema
import pytest
from helpers import CONTENT, STYLE, assert_error, body, ndjson, per_job
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from functions.openapi import response_name
from nst_jax import Limits, Options, errors
from nst_jax import client as nst_client
from nst_jax.messages import Progress, Result
from nst_jax.options import SPECS, options_json_schema

DOCUMENT_URI = "urn:neurastyle:openapi"


def contract_of(client) -> dict:
    r = client.get("/openapi.json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    return r.get_json()


@pytest.fixture
def contract(client) -> dict:
    return contract_of(client)


def pointer_part(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def schema_at(document: dict, pointer: str) -> jsonschema.Draft202012Validator:
    """A validator of the schema at JSON pointer `pointer` of `document`, its $refs resolved
    within the document."""
    registry = Registry().with_resource(DOCUMENT_URI,
                                        Resource.from_contents(document, default_specification=DRAFT202012))
    return jsonschema.Draft202012Validator({"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=registry)


def resolve(document: dict, pointer: str) -> tuple[str, dict]:
    """(pointer, object) at `pointer`, following a $ref there."""
    node = document
    for part in pointer.strip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    if "$ref" in node:
        return resolve(document, node["$ref"].removeprefix("#"))
    return pointer, node


def check_answer(document: dict, method: str, path: str, response) -> list:
    """Validate `response` against what `document` says `method` `path` answers with its status:
    the operation's response of that status, else its default; where the document has no such
    operation (404, 405), components.responses's of the status. Its required headers are
    there; its body (each line of an NDJSON one) matches the media type's schema. Returns the
    bodies validated."""
    operation = document["paths"].get(path, {}).get(method.lower())
    status = str(response.status_code)
    if operation is None:
        pointer = f"/components/responses/{response_name(response.status_code)}"
    else:
        key = status if status in operation["responses"] else "default"
        pointer = f"/paths/{pointer_part(path)}/{method.lower()}/responses/{key}"
    pointer, described = resolve(document, pointer)
    for name, header in described.get("headers", {}).items():
        if header["required"]:
            assert name in response.headers, (name, status)
    assert response.mimetype in described["content"], (response.mimetype, described)
    validator = schema_at(document, f"{pointer}/content/{pointer_part(response.mimetype)}/schema")
    if response.mimetype == "application/x-ndjson":
        bodies = ndjson(response)
    else:
        bodies = [response.get_json()]
    for value in bodies:
        validator.validate(value)
    return bodies


def request_schema(document: dict) -> jsonschema.Draft202012Validator:
    return schema_at(document, "/paths/~1stylize/post/requestBody/content/application~1json/schema")


# --- the document ----------------------------------------------------------------------------

def test_the_document_is_valid_openapi_3_1(contract):
    validate(contract)  # raises on any fault
    assert contract["openapi"].startswith("3.1.")
    assert {"/", "/stylize", "/config", "/healthz", "/openapi.json"} <= set(contract["paths"])


def test_the_validator_finds_faults(contract):
    """So that the check above can fail: a schema's "required" not a list, a response without
    its description."""
    bad_schema = copy.deepcopy(contract)
    bad_schema["components"]["schemas"]["StylizeRequest"]["required"] = "content_image"
    bad_response = copy.deepcopy(contract)
    del bad_response["components"]["responses"]["TooManyRequests"]["description"]
    for document in (bad_schema, bad_response):
        with pytest.raises(OpenAPIValidationError):
            validate(document)


def test_the_options_are_the_validations_own_under_the_deployments_limits(function, presets):
    limits = Limits(max_size=512, max_steps=50)
    client, _ = function(limits=limits, max_styles=3)
    document = contract_of(client)
    schemas = document["components"]["schemas"]
    options = schemas["Options"]
    assert options == options_json_schema(limits)
    assert set(options["properties"]) == {spec.name for spec in SPECS} | {"recipe"}  # a new option shows up
    assert options["properties"]["size"]["maximum"] == 512 and options["properties"]["steps"]["maximum"] == 50
    assert {name: p["default"] for name, p in options["properties"].items() if name != "recipe"} == Options().to_dict()
    request = schemas["StylizeRequest"]["properties"]
    assert request["style_preset"]["enum"] == presets.names() and presets.names()
    assert request["style_images"]["maxItems"] == 3


def test_every_error_code_is_listed_with_its_status(contract):
    from functions import http_errors

    listed = {}
    for response in contract["components"]["responses"].values():
        codes = response["content"]["application/json"]["schema"]["allOf"][1]["properties"]["error"]["properties"]
        listed.update({code: response for code in codes["code"]["enum"]})
    assert set(listed) == set(http_errors.STATUS)
    for code in (errors.NSTError.code, errors.ImageError.code, errors.OptionsError.code, errors.WeightsError.code):
        assert code in listed
    stylize = contract["paths"]["/stylize"]["post"]["responses"]
    for code, status in http_errors.STATUS.items():
        if code not in ("not_found", "method_not_allowed"):
            assert resolve(contract, stylize[str(status)]["$ref"][1:])[1] is listed[code]


def test_the_request_schema_takes_what_the_server_takes_and_refuses_what_it_refuses(contract, presets):
    schema = request_schema(contract)
    preset = presets.names()[0]
    for good in (body(), body(stream=True), {"content_image": CONTENT, "style_preset": preset},
                 {"content_image": CONTENT, "style_images": [STYLE, STYLE], "style_blend": [1, 2]}):
        schema.validate(good)
    for bad in ({"content_image": CONTENT}, {**body(), "style_preset": preset}, {**body(), "colour": 1},
                body(size=7), body(steps=10**6), {"content_image": CONTENT, "style_preset": "no such painting"},
                {**body(), "stream": "yes"}, {"style_image": STYLE}):
        assert not schema.is_valid(bad), bad


# --- real answers against it ----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/stylize", "/"])
def test_a_json_answer_matches_the_contract(client, contract, path):
    request = body(steps=2)
    request_schema(contract).validate(request)
    r = client.post(path, json=request)
    assert r.status_code == 200
    [result] = check_answer(contract, "POST", path, r)
    assert result["steps"] == 2


def test_a_streams_lines_match_the_contract(client, contract):
    r = client.post("/stylize", json=body(steps=3, stream=True))
    lines = check_answer(contract, "POST", "/stylize", r)
    assert [line["type"] for line in lines] == ["progress"] * 3 + ["result"]


def test_an_error_in_a_stream_matches_the_contract(function):
    def failing(*args, **kwargs):
        raise errors.ImageError("style is a blank canvas")
    client, _ = function(run_jobs=per_job(failing))
    r = client.post("/stylize", json=body(stream=True))
    assert check_answer(contract_of(client), "POST", "/stylize", r)[-1]["type"] == "error"



class Reading(dict):
    """A JSON object that notes in `read` the keys asked for."""

    def __init__(self, data: dict, read: set):
        super().__init__(data)
        self.read = read

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def test_the_client_reads_every_field_the_server_sends(function, contract, monkeypatch):
    """The stream's lines and the plain answer, as a real run sends them (valid by the document),
    read by nst_jax.client: every field of every line is read, and every field the document
    lists for a progress line and a result is sent."""
    client, _ = function()
    read: list[set] = []
    monkeypatch.setattr(nst_client, "_json", lambda data: read.append(set()) or Reading(json.loads(data), read[-1]))
    streamed = client.post("/stylize", json=body(steps=3, stream=True))
    lines = check_answer(contract, "POST", "/stylize", streamed)
    reports: list[Progress] = []
    result = nst_client._read_stream(streamed.get_data().splitlines(keepends=True), reports.append)
    assert [r.step for r in reports] == [1, 2, 3] and result.steps == 3 and result.image.shape == (32, 32, 3)
    plain = client.post("/stylize", json=body(steps=2))
    [answer] = check_answer(contract, "POST", "/stylize", plain)
    assert nst_client._read(Result, nst_client._json(plain.get_data())).steps == 2
    lines.append(answer)
    assert len(read) == len(lines)
    for line, keys in zip(lines, read):
        assert set(line) <= keys, f"the client did not read {set(line) - keys} of a {line.get('type', 'result')}"
    schemas = contract["components"]["schemas"]
    assert set().union(*lines[:-2]) == set(schemas["Progress"]["properties"])  # a preview included
    assert set(answer) == set(schemas["Result"]["properties"])

@pytest.mark.parametrize("path", ["/config", "/healthz", "/openapi.json"])
def test_the_get_routes_match_the_contract(client, contract, path):
    r = client.get(path)
    assert r.status_code == 200
    check_answer(contract, "GET", path, r)


def hold_the_uploads(service):
    assert service.uploads.acquire(blocking=False)


@pytest.mark.parametrize("method, path, request_args, settings, status, code", [
    ("POST", "/stylize", {"json": body(size=7)}, {}, 400, "invalid_option"),
    ("POST", "/stylize", {"json": body(content="not base64!")}, {}, 400, "invalid_base64"),
    ("POST", "/", {"json": {"content_image": CONTENT, "style_preset": "nope"}}, {}, 400, "unknown_style_preset"),
    ("POST", "/stylize", {"data": b"{", "content_type": "application/json"}, {}, 400, "invalid_json"),
    ("POST", "/stylize", {"json": body()}, {"max_body_bytes": 100}, 413, "body_too_large"),
    ("POST", "/stylize", {"json": body()}, {"max_pixels": 100}, 413, "image_too_large"),
    ("POST", "/stylize", {"data": b"content_image=x", "content_type": "text/plain"}, {}, 415,
     "unsupported_media_type"),
    ("GET", "/nope", {}, {}, 404, "not_found"),
    ("DELETE", "/config", {}, {}, 405, "method_not_allowed"),
    ("GET", "/stylize", {}, {}, 405, "method_not_allowed"),
    ("POST", "/stylize", {"json": body()}, {"max_uploads": 1, "hold": hold_the_uploads}, 429, "busy"),
])
def test_error_answers_match_the_contract(function, method, path, request_args, settings, status, code):
    settings = dict(settings)
    hold = settings.pop("hold", None)
    client, service = function(**settings)
    if hold:
        hold(service)
    r = client.open(path, method=method, **request_args)
    assert_error(r, status, code)
    check_answer(contract_of(client), method, path, r)


def test_not_ready_answers_match_the_contract(function, library_config, tmp_path):
    client, _ = function(config=dataclasses.replace(library_config, weights=tmp_path / "absent.npz"))
    document = contract_of(client)
    for method, path, request in (("GET", "/healthz", {}), ("POST", "/stylize", {"json": body()})):
        r = client.open(path, method=method, **request)
        assert r.status_code == 503
        assert check_answer(document, method, path, r)[0]["error"]["code"] == "weights_unavailable"


def test_an_answer_outside_the_contract_fails_the_check(client, contract):
    """So that the checks above can fail: a result without its image, an unknown error code."""
    r = client.post("/stylize", json=body())
    result = r.get_json()
    del result["image"]
    r.set_data(json.dumps(result))
    with pytest.raises(jsonschema.ValidationError, match="image"):
        check_answer(contract, "POST", "/stylize", r)
    r = client.get("/nope")
    r.set_data(json.dumps({"error": {"code": "no_such_code", "message": "x"}}))
    with pytest.raises(jsonschema.ValidationError, match="no_such_code"):
        check_answer(contract, "GET", "/nope", r)
