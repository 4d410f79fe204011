"""Options of one stylization, as plain data, validated the same way for the CLI and HTTP.

Each option is stated once, as a field of `Options` made by `option(...)`: its type (the
annotation), default, bounds and help. From those come the validation (`Options.validate`),
the parsing of JSON (`Options.from_mapping`), the command line's flags (`nst_jax.cli`), the
HTTP function's `GET /config` and the options' JSON Schema (`options_json_schema`). Adding an
option is one field here (and its use in the engine).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nst_jax.errors import OptionsError
from nst_jax.vgg import layer_names

MESSAGE_MAX = 200  # characters of an error message
LAYERS = tuple(dict.fromkeys(layer_names("vgg16") + layer_names("vgg19")))  # of either network
MAX_WEIGHT = 1e12  # of a loss term or a style layer: beyond, float32 losses overflow
# Named sets of option values; explicit options override them. "thorough": the default with 300
# steps at every scale (about five times its time). "seed": plain Gatys et al. (content error at
# block5_conv2, the five style layers, noise init, the photo's colours untouched, halving scales
# from 128 px, the last iterate, Adam on R, G, B alike, no smoothing between scales, no brushwork, a
# total variation weight too small to matter).
RECIPE_HELP = "a named set of the option values; the options given override it"
RECIPES = {
    "default": {},
    "thorough": {"steps": 300, "step_ratio": 1.0},
    "seed": {"content_layer": "block5_conv2", "style_layers": {f"block{i}_conv1": 1.0 for i in range(1, 6)},
             "init": "noise", "match_colors": False, "min_scale": 128, "scale_ratio": 2.0,
             "max_scales": 10, "average_decay": 0.0, "luminance_step": 1.0, "contour_smoothing": 0.0,
             "brushwork": 0.0, "content_weight": 1.0, "fine_content_weight": None, "tv_weight": 0.01, "steps": 300,
             "step_ratio": 1.0},
}


@dataclass(frozen=True)
class Limits:
    """Bounds a deployment puts on options (a public function wants smaller ones than the CLI)."""

    min_size: int = 32
    max_size: int = 4096
    max_steps: int = 5000
    max_seconds: float | None = None  # the ceiling of a run's time budget; None: none


Bound = float | Callable[[Limits], float] | None  # a number, or one that a deployment's limits give


def option(default, help: str, *, minimum: Bound = None, maximum: Bound = None, exclusive_minimum: bool = False,
           enum: tuple | None = None, kind: str | None = None, flag: str | None = None,
           metavar: str | None = None, nullable: bool = False):
    """A field of `Options`: its `default`, `help` (one line), bounds (inclusive; `minimum`
    exclusive where `exclusive_minimum`) or allowed values `enum`. `kind` names the check of a
    composite value ("blend": a list of weights or null, "layer_weights": {layer: weight});
    otherwise the annotation's type decides. `flag`/`metavar`: the command line's, where not
    ``--name-with-dashes``. `nullable`: None (JSON null) is a value too."""
    return dataclasses.field(default=default, metadata={
        "help": help, "minimum": minimum, "maximum": maximum, "exclusive_minimum": exclusive_minimum,
        "enum": enum, "kind": kind, "flag": flag, "metavar": metavar, "nullable": nullable})


@dataclass(frozen=True)
class Spec:
    """One option as `option` stated it. kind: "integer", "number", "boolean", "string",
    "blend" or "layer_weights"."""

    name: str
    kind: str
    default: object
    help: str
    minimum: Bound
    maximum: Bound
    exclusive_minimum: bool
    enum: tuple | None
    flag: str
    metavar: str | None
    nullable: bool

    def bounds(self, limits: Limits) -> tuple[float | None, float | None]:
        return tuple(b(limits) if callable(b) else b for b in (self.minimum, self.maximum))

    def why_invalid(self, value, limits: Limits) -> str | None:
        """Why `value` is not valid for this option ("must be ..., got ..."), or None."""
        low, high = self.bounds(limits)
        if value is None and self.nullable:
            return None
        if self.kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                return f"must be an integer, got {type(value).__name__}"
            if not low <= value <= high:
                return f"must be between {low} and {high}, got {value}"
        elif self.kind == "number":
            if not _is_finite_number(value):
                return f"must be a finite number, got {value!r}"
            if not (low < value if self.exclusive_minimum else low <= value) or value > high:
                span = (f"greater than {low:g}" if high == math.inf else f"in ({low:g}, {high:g}]"
                        if self.exclusive_minimum else f"between {low:g} and {high:g}")
                return f"must be {span}, got {value!r}"
        elif self.kind == "boolean":
            if not isinstance(value, bool):
                return f"must be true or false, got {value!r}"
        elif self.kind == "string":
            if not isinstance(value, str) or value not in self.enum:
                return f"must be one of {', '.join(map(repr, self.enum))}, got {value!r}"
        elif self.kind == "blend":
            if value is not None and not isinstance(value, tuple):
                return "must be a list of numbers"
            if value is not None and not (all(_is_finite_number(w) and w >= 0 for w in value) and sum(value) > 0):
                return "must be non-negative numbers with a positive sum"
        elif self.kind == "layer_weights":
            if not (isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value)):
                return "must be an object of layer names to weights"
            unknown = [name for name, _ in value if name not in LAYERS]
            if unknown:
                return f"has unknown layer {unknown[0]!r}; layers are {', '.join(LAYERS)}"
            weights = [w for _, w in value]
            if not (all(_is_finite_number(w) and 0 <= w <= MAX_WEIGHT for w in weights) and sum(weights) > 0):
                return f"must weigh its layers with numbers from 0 to {MAX_WEIGHT:g} with a positive sum"
        return None

    def json_schema(self, limits: Limits) -> dict:
        """This option's JSON Schema (draft 2020-12), with its default and help."""
        low, high = self.bounds(limits)
        if self.kind in ("integer", "number"):
            schema = {"type": [self.kind, "null"] if self.nullable else self.kind,
                      "exclusiveMinimum" if self.exclusive_minimum else "minimum": low,
                      **({"maximum": high} if high != math.inf else {})}
        elif self.kind == "boolean":
            schema = {"type": "boolean"}
        elif self.kind == "string":
            schema = {"type": "string", "enum": list(self.enum)}
        elif self.kind == "blend":
            schema = {"type": ["array", "null"], "items": {"type": "number", "minimum": 0}, "minItems": 1}
        else:
            schema = {"type": ["object", "null"] if self.nullable else "object",
                      "propertyNames": {"enum": list(LAYERS)}, "minProperties": 1,
                      "additionalProperties": {"type": "number", "minimum": 0, "maximum": MAX_WEIGHT}}
        return {**schema, "default": self.to_json(self.default), "description": self.help}

    def to_json(self, value):
        """`value` of this option as JSON has it: a blend as a list, style layers as an object."""
        if self.kind == "blend" and value is not None:
            return list(value)
        return dict(value) if self.kind == "layer_weights" and value is not None else value


def _is_finite_number(value) -> bool:
    """A real number a float can hold: not a bool, not inf or nan, not an int beyond float's range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (JSON allows any length)
        return False


def _layer_order(item) -> tuple:
    name = item[0]
    return (LAYERS.index(name), "") if name in LAYERS else (len(LAYERS), str(name))


# The five layers of Gatys et al., equally weighted: the style layers of ImageNet weights.
STYLE_LAYERS = tuple((f"block{i}_conv1", 1.0) for i in range(1, 6))
# The fallback's layers were fine-tuned to fire on edges (HED): the Gram statistics of its blocks
# 4 and 5 ask for an embossed relief on skies and walls and melt a house's windows, so its style
# layers are blocks 1-3, the closest to the ImageNet features it started from (QUALITY.md).
EDGE_TUNED_STYLE_LAYERS = STYLE_LAYERS[:3]


# The fallback's features fire on edges of light, and Adam on R, G and B alike met their statistics
# with an embossed, plastic-looking relief on skies and walls; with its steps in light and shade
# 0.3 times those in colour, the same texture is painted as dabs of colour (QUALITY.md).
EDGE_TUNED_LUMINANCE_STEP = 0.3

# Its texture grows out of a smooth start as short shaded ripples; smoothed along its own contours
# between scales, where the photo is flat, they are drawn out into longer strokes (`nst_jax.strokes`).
EDGE_TUNED_CONTOUR_SMOOTHING = 8.0

# Even drawn out, the ripples are the network's form of the painting's detail, not the painting's:
# the finished picture's fine detail is replaced by the painting's own brush strokes where the
# photo is flat, and on its edges half of it, more as the painting is strokes all over (`nst_jax.brushwork`).
EDGE_TUNED_BRUSHWORK = 1.0


# The options that follow the weights where none is given: (on the edge-tuned fallback, on ImageNet weights).
NETWORK_DEFAULTS = {
    "luminance_step": (EDGE_TUNED_LUMINANCE_STEP, 1.0),
    "contour_smoothing": (EDGE_TUNED_CONTOUR_SMOOTHING, 0.0),
    "brushwork": (EDGE_TUNED_BRUSHWORK, 0.0),
}


def network_style_layers(edge_tuned: bool) -> tuple[tuple[str, float], ...]:
    """The style layers of a network whose `style_layers` are not given: `EDGE_TUNED_STYLE_LAYERS`
    for the edge-tuned fallback (`nst_jax.weights.Weights.edge_tuned`), else `STYLE_LAYERS`."""
    return EDGE_TUNED_STYLE_LAYERS if edge_tuned else STYLE_LAYERS


@dataclass(frozen=True)
class Options:
    """How to stylize: every field is an `option` (its help says what it is). Weights are
    relative: only their ratios matter. `style_blend` may be given as a list, `style_layers`
    as a mapping {layer: weight}; they are kept as a tuple and as (layer, weight) pairs in the
    network's order (so options stay hashable and compare by value)."""

    size: int = option(512, "longest side of the output, px",
                       minimum=lambda limits: limits.min_size, maximum=lambda limits: limits.max_size)
    steps: int = option(100, "optimizer steps at the coarsest scale, each finer scale running step_ratio times "
                             "the previous one's (L-BFGS: iterations, each of which may evaluate the loss more "
                             "than once)", minimum=1, maximum=lambda limits: limits.max_steps)
    step_ratio: float = option(0.55, "steps of each finer scale relative to the previous scale's: a finer scale "
                                    "starts from the coarser one's picture and has only detail to add, at "
                                    "several times the cost per step (1: as many)", minimum=0.05, maximum=1.0)
    max_seconds: float | None = option(
        None, "time budget of the run, seconds, compiling included: the steps are planned from measured step "
              "costs (and cut, if need be) to end within it; none: the recipe's steps",
        minimum=0, exclusive_minimum=True, maximum=lambda limits: limits.max_seconds or math.inf, nullable=True)
    content_weight: float = option(0.25, "weight of the content error (how much of the photo stays)",
                                   minimum=0, maximum=MAX_WEIGHT)
    # Firmer at the finer scales: they start from the coarsest one's picture, which has the painting's
    # texture already, and would otherwise melt what it kept of a house's windows (QUALITY.md).
    fine_content_weight: float | None = option(
        1.0, "content_weight at the scales after the coarsest, which add detail to its picture (none: "
             "content_weight there too)", minimum=0, maximum=MAX_WEIGHT, nullable=True)
    style_weight: float = option(10.0, "weight of the style error (how much of the painting's texture)",
                                 minimum=0, maximum=MAX_WEIGHT)
    # Low: more smoothing leaves shaded, plastic-looking blobs where the painting has strokes (QUALITY.md).
    tv_weight: float = option(5.0, "weight of the total variation (smoothness)", minimum=0, maximum=MAX_WEIGHT)
    lr: float = option(0.03, "Adam step size, pixel units in [0, 1] per step (unused by L-BFGS)",
                       minimum=0, exclusive_minimum=True, maximum=1)
    luminance_step: float | None = option(
        None, "Adam's steps in light and shade relative to its steps in colour (1: on R, G, B alike; none: the "
              "network's, 1 for ImageNet weights, 0.3 for the edge-tuned fallback; unused by L-BFGS)",
        minimum=0, exclusive_minimum=True, maximum=1, nullable=True)
    contour_smoothing: float | None = option(
        None, "between scales, the picture smoothed along its own contours where the photo is flat, over this "
              "many px either way, so that the texture's ripples become strokes (0: not; none: the network's, 0 "
              "for ImageNet weights, 8 for the edge-tuned fallback)", minimum=0, maximum=64, nullable=True)
    brushwork: float | None = option(
        None, "the finished picture's fine detail replaced by the painting's own brush strokes (where the photo is "
              "flat; on its edges half, more as the painting is strokes all over), this many times as strong as they "
              "are in the painting (0: not; none: the network's, 0 for ImageNet weights, 1 for the edge-tuned "
              "fallback)", minimum=0, maximum=4, nullable=True)
    init: str = option("content", "start from the content image or from noise", enum=("content", "noise"))
    seed: int = option(0, "seed of the noise init (bit-for-bit repeatable on one machine)",
                       minimum=0, maximum=2**32 - 1)
    preserve_color: bool = option(False, "transfer the style to luminance only, keep the content's colours")
    match_colors: bool = option(True, "recolour the photo to the paintings' distribution of colours (a quarter of "
                                      "its light and dark kept) before stylizing it, so that the picture takes their "
                                      "palette (preserve_color does the opposite)", flag="--no-match-colors")
    multiscale: bool = option(True, "coarse to fine: up to max_scales scales, from at least min_scale px up "
                                    "to size, each scale scale_ratio times the previous, each from the "
                                    "previous one's result and Adam state",
                              flag="--single-scale")
    style_blend: tuple[float, ...] | None = option(None, "one weight per style image (normalised to sum 1); "
                                                         "none: equal", kind="blend", metavar="W")
    optimizer: str = option("adam", "how the pixels are optimised: Adam, or lbfgs (SciPy's L-BFGS-B within "
                                    "[0, 1], which often reaches the same loss sooner)", enum=("adam", "lbfgs"))
    min_scale: int = option(256, "the coarsest scale's longest side is at least this, px", minimum=64, maximum=1024)
    # √2 (256, 384, 512 px) rather than 2: a finer scale remakes the deep layers' texture at its own
    # size, and from a picture √2 coarser it has less to remake, so its few steps go further
    # (measured when it was chosen: the same texture at 512 px in 286 s rather than 329).
    scale_ratio: float = option(math.sqrt(2), "size ratio of consecutive scales", minimum=1.1, maximum=4.0)
    # 5: a 1024 px picture starts at 256 px as a 512 px one does, so it is the 512 px picture refined
    # at 736 and 1024 px: the same layout and strokes, in half the time of starting at 512 px, whose
    # 100 steps there remade the texture finer than the 512 px picture's (QUALITY.md, "Larger pictures").
    max_scales: int = option(5, "at most this many scales: a larger picture starts at a finer coarsest scale",
                             minimum=1, maximum=10)
    content_layer: str = option("block4_conv2", "the VGG layer whose activations carry the photo",
                                enum=LAYERS, metavar="LAYER")
    style_layers: tuple[tuple[str, float], ...] | None = option(
        None, "the VGG layers whose Gram matrices carry the painting, with their relative weights (the style "
              "error is their weighted mean; none: the network's, block1_conv1 to block5_conv1 for ImageNet "
              "weights, block1-3 for the edge-tuned fallback)", kind="layer_weights", metavar="LAYER=W",
        nullable=True)
    fine_style_layers: tuple[tuple[str, float], ...] | None = option(
        None, "style_layers at the scales after the coarsest, which add detail to its picture (none: "
              "style_layers there too)",
        kind="layer_weights", metavar="LAYER=W", nullable=True)
    style_scale: float = option(1.0, "style image size relative to the content's current scale (never "
                                     "upscaled past its own pixels)", minimum=0.1, maximum=4.0)
    average_decay: float = option(0.98, "decay per step of the iterates' moving average, the result (0: the "
                                        "last iterate); smooths away the iterates' pixel noise",
                                  minimum=0.0, maximum=0.999)

    def __post_init__(self):
        if isinstance(self.style_blend, list):
            object.__setattr__(self, "style_blend", tuple(self.style_blend))
        for name in ("style_layers", "fine_style_layers"):
            if isinstance(getattr(self, name), Mapping):
                object.__setattr__(self, name, tuple(sorted(getattr(self, name).items(), key=_layer_order)))

    def validate(self, limits: Limits = Limits(), n_styles: int | None = None) -> "Options":
        """Check every field against `limits`; returns self. Raises OptionsError naming the field."""
        def bad(name, why):
            message = f"option {name!r} {why}"
            # "got ..." echoes what was sent, which may be a 400-digit number or a long string
            raise OptionsError(message if len(message) <= MESSAGE_MAX else message[:MESSAGE_MAX] + "…")

        for spec in SPECS:
            why = spec.why_invalid(getattr(self, spec.name), limits)
            if why:
                bad(spec.name, why)
        if self.style_weight == 0 and 0 in (self.content_weight, self.fine_content_weight):
            bad("style_weight", "and content_weight (or fine_content_weight) cannot both be 0")
        if self.style_blend is not None and n_styles is not None and len(self.style_blend) != n_styles:
            bad("style_blend", f"has {len(self.style_blend)} weights for {n_styles} style images")
        return self

    def loss_weight_at(self, term: str, scale: int) -> float:
        """The weight of loss term `term` ("content", "style" or "tv") at scale `scale` (0: the coarsest)."""
        if term == "content" and scale > 0 and self.fine_content_weight is not None:
            return self.fine_content_weight
        return getattr(self, f"{term}_weight")

    def style_layers_at(self, scale: int, edge_tuned: bool) -> tuple[tuple[str, float], ...]:
        """The (layer, weight) pairs of the style error at scale `scale` (0: the coarsest) on a
        network whose weights are `edge_tuned` or not (`network_style_layers`)."""
        if scale > 0 and self.fine_style_layers is not None:
            return self.fine_style_layers
        return self.style_layers if self.style_layers is not None else network_style_layers(edge_tuned)

    def on_network(self, name: str, edge_tuned: bool) -> float:
        """Option `name` (one of NETWORK_DEFAULTS), or where none is given the network's: its
        value on the edge-tuned fallback (`nst_jax.weights.Weights.edge_tuned`) or on ImageNet
        weights, where the paper's recipe stays."""
        given = getattr(self, name)
        if given is not None:
            return given
        on_edge_tuned, on_imagenet = NETWORK_DEFAULTS[name]
        return on_edge_tuned if edge_tuned else on_imagenet

    @classmethod
    def from_mapping(cls, values: Mapping, limits: Limits = Limits(), n_styles: int | None = None) -> "Options":
        """Build from JSON-like data (unknown keys are an error), validated against `limits`.
        A "recipe" key names a set of values (`RECIPES`) that the other keys override."""
        if not isinstance(values, Mapping):
            raise OptionsError(f"options must be an object, got {type(values).__name__}")
        values = dict(values)
        recipe = values.pop("recipe", "default")
        if not isinstance(recipe, str) or recipe not in RECIPES:
            raise OptionsError(f"option 'recipe' must be one of {', '.join(map(repr, RECIPES))}, got {recipe!r}")
        values = {**RECIPES[recipe], **values}
        unknown = sorted(set(values) - set(SPEC_BY_NAME))
        if unknown:
            raise OptionsError(f"unknown option(s) {unknown}; known options are {sorted(SPEC_BY_NAME)}")
        for name, value in values.items():
            # JSON has one number type: accept 2.0 for an integer option, but not 2.5.
            if SPEC_BY_NAME[name].kind == "integer" and isinstance(value, float) and value.is_integer():
                values[name] = int(value)
        return cls(**values).validate(limits, n_styles)

    def to_dict(self) -> dict:
        """The options as JSON has them (`from_mapping` takes it back)."""
        return {spec.name: spec.to_json(getattr(self, spec.name)) for spec in SPECS}


_KINDS = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _not_none(hint):
    """The type of `X | None` (a nullable option's annotation) is X's."""
    return next(t for t in typing.get_args(hint) if t is not type(None)) if typing.get_args(hint) else hint
SPECS = tuple(
    Spec(name=f.name, kind=f.metadata["kind"] or _KINDS[_not_none(hint)], default=f.default, help=f.metadata["help"],
         minimum=f.metadata["minimum"], maximum=f.metadata["maximum"],
         exclusive_minimum=f.metadata["exclusive_minimum"], enum=f.metadata["enum"],
         flag=f.metadata["flag"] or "--" + f.name.replace("_", "-"), metavar=f.metadata["metavar"],
         nullable=f.metadata["nullable"])
    for f, hint in zip(dataclasses.fields(Options), typing.get_type_hints(Options).values()))
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


def options_json_schema(limits: Limits = Limits()) -> dict:
    """The JSON Schema (draft 2020-12) of the options object that `Options.from_mapping` takes
    under `limits`: every option's type, bounds, default and help, and "recipe". Rules across
    options (content and style weights not both 0, one blend weight per style image) are
    `validate`'s alone."""
    recipe = {"type": "string", "enum": list(RECIPES), "default": "default", "description": RECIPE_HELP}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "NeuraStyle options",
            "type": "object", "additionalProperties": False,
            "properties": {"recipe": recipe, **{spec.name: spec.json_schema(limits) for spec in SPECS}}}
