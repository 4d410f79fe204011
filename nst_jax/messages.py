"""What a run reports and what a server answers with, in Python and as JSON, stated once.

`Progress` is a progress report: the library hands it to `on_progress`; a server sends it as a
line of a stream (`to_json`), and a client reads it back (`from_json`). `Result` is a
stylization's answer: the image and what the run did. Each JSON field is a `Wire` of
`PROGRESS_WIRE` or `RESULT_WIRE`: its name, its JSON Schema and the conversions of its value,
so that the JSON written, the JSON read and the schema of the OpenAPI document (`json_schemas`)
are the same list. The page (web/app.js) reads the fields by these names.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nst_jax import images

PREVIEW_SIDE = 256  # px, longest side of a progress report's preview on the wire
Ref = Callable[[str], dict]  # a schema's name -> a reference to it (the OpenAPI document's components)


def _same(value):
    return value


@dataclass(frozen=True)
class Wire:
    """One field of a message as JSON: `schema` (or a function of `Ref` giving it), whether every
    message has it (`required`), and the conversions of the attribute of that name to JSON
    (`encode`) and back (`decode`). A value that encodes to None where the schema does not allow
    null is left out."""

    name: str
    schema: dict | Callable[[Ref], dict]
    required: bool = True
    encode: Callable[[Any], Any] = _same
    decode: Callable[[Any], Any] = _same

    def schema_of(self, ref: Ref) -> dict:
        return self.schema(ref) if callable(self.schema) else self.schema

    def nullable(self) -> bool:
        kind = self.schema.get("type") if isinstance(self.schema, dict) else None
        return kind == "null" or isinstance(kind, list) and "null" in kind


def _to_json(message, fields: tuple[Wire, ...]) -> dict:
    out = {}
    for f in fields:
        value = f.encode(getattr(message, f.name))
        if value is not None or f.nullable():
            out[f.name] = value
    return out


def _from_json(data: Mapping, fields: tuple[Wire, ...]) -> dict:
    """{name: decoded value} of the fields `data` has (KeyError for a required one it lacks)."""
    return {f.name: f.decode(data[f.name]) for f in fields if f.required or data.get(f.name) is not None}


def _object_schema(fields: tuple[Wire, ...], ref: Ref, **more) -> dict:
    return {"type": "object", "required": [f.name for f in fields if f.required],
            "properties": {f.name: f.schema_of(ref) for f in fields}, **more}


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _png(image: np.ndarray) -> str:
    return base64.b64encode(images.encode(image, "PNG")).decode("ascii")


def _small_png(image: np.ndarray | None) -> str | None:
    """`image` (H, W, 3) as a PNG in Base64, downscaled to at most PREVIEW_SIDE px."""
    if image is None:
        return None
    h, w = image.shape[:2]
    scale = min(1.0, PREVIEW_SIDE / max(h, w))
    if scale < 1.0:
        image = images.resize(image, max(1, round(h * scale)), max(1, round(w * scale)))
    return _png(image)


def _image_of(name: str) -> Callable[[str], np.ndarray]:
    """The decoder of a PNG in Base64 to (H, W, 3) float32 in [0, 1] (`name` for its errors)."""
    def decode(text: str) -> np.ndarray:
        return images.to_float(images.decode_rgb8(base64.b64decode(text, validate=True), name=name))
    return decode


def _integer(minimum: int, description: str | None = None) -> dict:
    return {"type": "integer", "minimum": minimum, **({"description": description} if description else {})}


@dataclass(frozen=True)
class Progress:
    """A progress report, handed to the `on_progress` callback between chunks of steps.

    step/total count optimizer steps (Adam steps or L-BFGS iterations) over all scales;
    scale is the 0-based index of the current scale of `scales`; shape is its (H, W);
    loss the weighted total loss of the last step; elapsed seconds since the start;
    preview the current image (H, W, 3) in [0, 1] (None where a report is made without one);
    evaluations of the loss at this scale so far (Adam: one a step; L-BFGS: its line
    searches may take more; not sent); seconds_left the estimated seconds until the run ends,
    from step costs measured in this process (`nst_jax.schedule`); budget_cut whether the time
    budget (`Options.max_seconds`) cut the recipe's steps, in which case `total` is the
    steps of the plan cut to fit, and the last report's `step == total` the steps that ran.
    """

    step: int
    total: int
    scale: int
    scales: int
    shape: tuple[int, int]
    loss: float
    elapsed: float
    preview: np.ndarray | None = None
    evaluations: int = 0
    seconds_left: float | None = None
    budget_cut: bool = False

    KIND = "progress"  # its "type" as a line of a stream

    def to_json(self) -> dict:
        """This report as a line of a stream (its preview, if any, downscaled: `PREVIEW_SIDE`)."""
        return {"type": self.KIND, **_to_json(self, PROGRESS_WIRE)}

    @classmethod
    def from_json(cls, data: Mapping) -> Progress:
        """A line of a stream read back (KeyError, TypeError, ValueError where it is malformed)."""
        return cls(**_from_json(data, PROGRESS_WIRE))

    @staticmethod
    def json_schema(ref: Ref) -> dict:
        return _object_schema((Wire("type", {"const": Progress.KIND}), *PROGRESS_WIRE), ref)


PROGRESS_WIRE = (
    Wire("step", _integer(1, "Steps done, all scales."), decode=int),
    Wire("total", _integer(1, "Steps of the whole run."), decode=int),
    Wire("scale", _integer(0, "The scale running, 0 the coarsest."), decode=int),
    Wire("scales", _integer(1), decode=int),
    Wire("shape", {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2,
                   "description": "(height, width) of the working image, px."},
         encode=list, decode=lambda hw: (int(hw[0]), int(hw[1]))),
    Wire("elapsed", {"type": "number", "minimum": 0, "description": "Seconds since the run started."},
         encode=_seconds, decode=float),
    Wire("seconds_left", {"type": ["number", "null"], "description": "Estimated seconds to the end."},
         required=False, encode=_seconds, decode=lambda s: None if s is None else float(s)),
    Wire("budget_cut", {"type": "boolean", "description": "Whether the time limit cut the planned steps."},
         required=False, decode=bool),
    Wire("loss", {"type": ["number", "null"], "description": "The loss; null where not finite."},
         encode=lambda loss: loss if math.isfinite(loss) else None,
         decode=lambda loss: math.nan if loss is None else float(loss)),
    Wire("preview", {"type": "string", "description": "The image so far, a small PNG in base64 (now and then)."},
         required=False, encode=_small_png, decode=_image_of("preview")),
)


@dataclass(frozen=True)
class Result:
    """A stylization's answer: the image (H, W, 3) float32 RGB in [0, 1] and what the server
    did: steps run, seconds from its turn to its end, the options as used (every one, as
    `Options.to_dict`), the weights ({"arch", "source"}, `weights_json`), whether the time
    budget cut the steps. `width` and `height` are the image's, sent for a reader that does
    not decode it."""

    image: np.ndarray
    steps: int
    elapsed_s: float
    options: dict
    weights: dict
    budget_cut: bool = False

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def to_json(self) -> dict:
        """The answer's body (a stream's last line adds "type": "result")."""
        return _to_json(self, RESULT_WIRE)

    @classmethod
    def from_json(cls, data: Mapping) -> Result:
        """An answer's body read back (KeyError, TypeError, ValueError where it is malformed, or
        where its width and height are not its image's)."""
        values = _from_json(data, RESULT_WIRE)
        size = values.pop("width"), values.pop("height")
        result = cls(**values)
        if size != (result.width, result.height):
            raise ValueError(f"width and height {size} are not the image's {(result.width, result.height)}")
        return result

    @staticmethod
    def json_schema(ref: Ref) -> dict:
        return _object_schema(RESULT_WIRE, ref)


RESULT_WIRE = (
    Wire("image", {"type": "string", "description": "The stylized image, a PNG in base64."},
         encode=_png, decode=_image_of("the server's result")),
    Wire("width", _integer(1, "px"), decode=int),
    Wire("height", _integer(1, "px"), decode=int),
    Wire("steps", _integer(0, "Optimisation steps run, all scales."), decode=int),
    Wire("budget_cut", {"type": "boolean", "description": "Whether the time limit stopped it early."},
         required=False, decode=bool),
    Wire("elapsed_s", {"type": "number", "minimum": 0, "description": "Seconds from its turn to its end."},
         encode=_seconds, decode=float),
    Wire("weights", lambda ref: ref("Weights"), decode=dict),
    Wire("options", lambda ref: {**ref("Options"), "description": "The options it ran with, every one."},
         decode=dict),
)

WEIGHTS_SCHEMA = {"type": "object", "required": ["arch", "source"],
                  "properties": {"arch": {"type": "string"}, "source": {"type": "string"}},
                  "description": "The network's weights the server runs with."}


def weights_json(model) -> dict:
    """What a server says of the weights a `Model` runs with (`WEIGHTS_SCHEMA`)."""
    return {"arch": model.weights.arch, "source": model.weights.source}


def json_schemas(ref: Ref) -> dict[str, dict]:
    """The JSON Schemas {name: schema} of the messages, for the OpenAPI document's components;
    `ref(name)` refers to another of them ("Options" is the document's own)."""
    return {"Weights": WEIGHTS_SCHEMA, "Result": Result.json_schema(ref), "Progress": Progress.json_schema(ref)}
