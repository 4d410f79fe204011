"""The REST contract as OpenAPI 3.1 (`GET /openapi.json`), built from what the function checks
and answers with, not kept by hand: the options' JSON Schema (`options_json_schema`) under the
deployment's limits, the built-in styles' names, the request's fields (parsing.py), the progress
lines' and the result's (`nst_jax.messages`) and every error code's status (`http_errors.STATUS`).

Answers' schemas list the fields answers have and allow others, so that a field added later
breaks no client that validates against an older document.
"""

from __future__ import annotations

from collections.abc import Sequence

from nst_jax.images import FORMATS
from nst_jax.messages import json_schemas
from nst_jax.options import options_json_schema

from functions import http_errors
from functions.parsing import IMAGE_KEYS
from functions.settings import Settings

OPENAPI_VERSION = "3.1.0"
ROUTING_CODES = ("not_found", "method_not_allowed")  # a path or method with no operation below
REFUSAL_CODES = ("busy", "shutting_down")  # `admission.Refused`: they say when to try again


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def response_name(status: int) -> str:
    """The name of an error status's response among the components: its reason phrase in
    CamelCase ("MethodNotAllowed")."""
    code = next(c for c, s in http_errors.STATUS.items() if s == status)
    return "".join(word.capitalize() for word in http_errors.reason(code).replace("-", " ").split())


def error_statuses() -> dict[int, list[str]]:
    """status -> its error codes, from http_errors.STATUS."""
    by_status: dict[int, list[str]] = {}
    for code, status in http_errors.STATUS.items():
        by_status.setdefault(status, []).append(code)
    return dict(sorted(by_status.items()))


def error_response(status: int, codes: Sequence[str]) -> dict:
    """The response of an error status: the error body, its code one of `codes`; Allow on a 405
    and Retry-After on a refusal."""
    response = {
        "description": f"{http_errors.reason(codes[0])}: " + ", ".join(codes),
        "content": json_content({"allOf": [ref("Error"), {"properties": {"error": {"properties": {
            "code": {"enum": list(codes)}}}}}]}),
    }
    headers = {}
    if "method_not_allowed" in codes:
        headers["Allow"] = {"description": "The methods this path takes, comma-separated.", "required": True,
                            "schema": {"type": "string"}}
    refusals = [c for c in codes if c in REFUSAL_CODES]
    if refusals:
        headers["Retry-After"] = {"description": f"Seconds to wait before trying again ({', '.join(refusals)}).",
                                  "required": refusals == list(codes), "schema": {"type": "integer", "minimum": 1}}
    if headers:
        response["headers"] = headers
    return response


def schemas(settings: Settings, preset_names: Sequence[str]) -> dict:
    image = {"type": "string", "description": f"An image ({', '.join(FORMATS)}) in base64, or a data: URL of it "
                                              "(data:image/png;base64,...)."}
    options = options_json_schema(settings.limits)
    error = {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"enum": list(http_errors.STATUS),
                     "description": "Stable, machine-readable; its status is http_errors.STATUS's."},
            "message": {"type": "string", "description": "What went wrong and what to do, for people."}}}},
    }
    return {
        "Options": options,
        "Image": image,
        "StylizeRequest": {
            "type": "object", "required": ["content_image"], "additionalProperties": False,
            "oneOf": [{"required": [key]} for key in IMAGE_KEYS],
            "description": f"Exactly one of {', '.join(IMAGE_KEYS)} gives the style.",
            "properties": {
                "content_image": ref("Image"),
                "style_image": ref("Image"),
                "style_images": {"type": "array", "items": ref("Image"), "minItems": 1,
                                 "maxItems": settings.max_styles},
                "style_preset": {"type": "string", "enum": list(preset_names),
                                 "description": "A built-in style (GET /config lists them)."},
                "style_blend": {**options["properties"]["style_blend"],
                                "description": "options.style_blend, given here instead."},
                "options": ref("Options"),
                "stream": {"type": "boolean", "default": False,
                           "description": "Answer NDJSON: progress lines, then the result or an error."},
            },
        },
        **json_schemas(ref),
        "StreamLine": {"oneOf": [
            ref("Progress"),
            {"allOf": [ref("Result"), {"required": ["type"], "properties": {"type": {"const": "result"}}}]},
            {"allOf": [ref("Error"), {"required": ["type"], "properties": {"type": {"const": "error"}}}]},
        ], "description": "One line of a stream: progress, or its last line, a result or an error."},
        "Error": error,
        "Health": {
            "type": "object", "required": ["ready"],
            "properties": {"ready": {"type": "boolean"}, "device": {"type": "string"}, "weights": ref("Weights"),
                           "load": {"type": "object", "additionalProperties": {"type": "integer"},
                                    "description": "Requests running and waiting, and the limits."},
                           "error": error["properties"]["error"]},
        },
        "Config": {
            "type": "object", "required": ["defaults", "limits", "options", "style_presets"],
            "properties": {
                "defaults": ref("Options"),
                "limits": {"type": "object", "additionalProperties": False, "properties": {
                    **{name: {"type": "integer", "minimum": 1} for name in ("min_size", "max_size", "max_steps")},
                    "max_seconds": {"type": ["number", "null"], "exclusiveMinimum": 0,
                                    "description": "The ceiling of a request's time budget, seconds (none: none)."}}},
                "options": {"type": "object", "description": "Each option's JSON Schema, as in Options.",
                            "additionalProperties": {"type": "object"}},
                "style_presets": {"type": "array", "items": {
                    "type": "object", "required": ["name", "url"],
                    "properties": {"name": {"enum": list(preset_names)}, "title": {"type": "string"},
                                   "painter": {"type": "string"}, "year": {"type": ["integer", "null"]},
                                   "url": {"type": "string"}}}},
            },
        },
    }


def document(settings: Settings, preset_names: Sequence[str]) -> dict:
    """The OpenAPI 3.1 document of a function served with `settings` and the built-in styles
    `preset_names`."""
    by_status = error_statuses()
    responses = {response_name(status): error_response(status, codes) for status, codes in by_status.items()}
    stylize_errors = {str(status): {"$ref": f"#/components/responses/{response_name(status)}"}
                      for status, codes in by_status.items() if not set(codes) <= set(ROUTING_CODES)}
    stylize = {
        "summary": "Stylize an image",
        "description": "Gatys style transfer of content_image in the style given. Limits: "
                       f"{settings.max_body_bytes} bytes of body, {settings.max_pixels} pixels an image, "
                       f"{settings.max_request_pixels} pixels in all, {settings.deadline_s:g} s a request.",
        "requestBody": {"required": True, "content": json_content(ref("StylizeRequest"))},
        "responses": {
            "200": {"description": "The result; with \"stream\": true, NDJSON: progress lines, then one "
                                   "line of the result or an error (an error after the stream started "
                                   "comes in band, with status 200).",
                    "content": {**json_content(ref("Result")),
                                "application/x-ndjson": {"schema": ref("StreamLine")}}},
            **stylize_errors,
        },
    }
    error_default = {"default": {"description": "Any other failure: the error body.",
                                 "content": json_content(ref("Error"))}}

    def get(summary: str, schema: dict, **more) -> dict:
        return {"get": {"summary": summary, "responses": {"200": {"description": summary,
                                                                  "content": json_content(schema)},
                                                          **more, **error_default}}}

    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "NeuraStyle", "version": "1",
            "description": "Neural style transfer (Gatys et al.) as an HTTP function. Every failure is "
                           "JSON {\"error\": {\"code\", \"message\"}} with its code's status; a path not "
                           "listed answers 404 not_found, a method not listed 405 method_not_allowed "
                           "(components.responses has every status).",
        },
        "paths": {
            "/stylize": {"post": {**stylize, "operationId": "stylize"}},
            "/": {"post": {**stylize, "operationId": "stylizeAtRoot"},
                  "get": {"summary": "The web page", "responses": {
                      "200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}},
                      **error_default}}},
            "/config": get("What the page needs: option defaults, schemas and limits, the built-in styles",
                           ref("Config")),
            "/healthz": get("Readiness: weights loaded and programs compiled", ref("Health"), **{
                "503": {"description": "Not ready: weights missing, warming up or shutting down",
                        "content": json_content({"allOf": [ref("Health"), ref("Error")]})}}),
            "/openapi.json": get("This document", {"type": "object"}),
        },
        "components": {"schemas": schemas(settings, preset_names), "responses": responses},
    }
