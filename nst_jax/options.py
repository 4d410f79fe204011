"""Options of one stylization, as plain data, validated the same way for the CLI and HTTP."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from nst_jax.errors import OptionsError
from nst_jax.vgg import layer_names

OPTIMIZERS = ("adam", "lbfgs")
MIN_SCALE_RANGE = (64, 1024)  # px
MESSAGE_MAX = 200  # characters of an error message
CONTENT_LAYERS = tuple(dict.fromkeys(layer_names("vgg16") + layer_names("vgg19")))
# Named sets of option values; explicit options override them. "seed" is the project's first
# recipe (content error at block5_conv2, noise init, halving scales from 128 px, the last iterate,
# a total variation weight too small to matter).
RECIPES = {
    "default": {},
    "seed": {"content_layer": "block5_conv2", "init": "noise", "min_scale": 128, "scale_ratio": 2.0,
             "average_decay": 0.0, "tv_weight": 0.01},
}


def env_number(name: str, default: float, environ: Mapping[str, str] | None = None, *,
               integer: bool = False, low: float = 0, high: float = math.inf) -> float:
    """The number in environment variable `name` of `environ` (default `os.environ`), or
    `default` where it is unset or blank; a whole number where `integer`, within [low, high].
    The one reader of numeric settings. Raises OptionsError naming the variable."""
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high and (value.is_integer() or not integer)):
        kind = "a whole number" if integer else "a number"
        raise OptionsError(f"environment variable {name}={raw!r} must be {kind} from {low:g} to {high:g}")
    return int(value) if integer else value


@dataclass(frozen=True)
class Limits:
    """Bounds a deployment puts on options (a public function wants smaller ones than the CLI).

    Environment overrides: NEURASTYLE_MAX_SIZE, NEURASTYLE_MAX_STEPS.
    """

    min_size: int = 32
    max_size: int = 4096
    max_steps: int = 5000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **defaults) -> "Limits":
        """`defaults`, overridden by NEURASTYLE_MAX_SIZE and NEURASTYLE_MAX_STEPS in `environ`
        (default `os.environ`), each at most the library's own bound (`Limits()`): the engine
        validates every run against those. Raises OptionsError for a bad value."""
        base, library = cls(**defaults), cls()
        return cls(min_size=base.min_size,
                   max_size=env_number("NEURASTYLE_MAX_SIZE", base.max_size, environ, integer=True,
                                       low=base.min_size, high=library.max_size),
                   max_steps=env_number("NEURASTYLE_MAX_STEPS", base.max_steps, environ, integer=True,
                                        low=1, high=library.max_steps))


def _is_finite_number(value) -> bool:
    """A real number a float can hold: not a bool, not inf or nan, not an int beyond float's range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (JSON allows any length)
        return False


@dataclass(frozen=True)
class Options:
    """How to stylize. Weights are relative: only their ratios matter.

    Attributes:
      size: longest side of the output, pixels.
      steps: optimizer steps at full size (each smaller scale gets as many): Adam steps, or
        for ``"lbfgs"`` L-BFGS iterations, each of which may evaluate the loss more than once.
      content_weight, style_weight, tv_weight: loss weights (see `nst_jax.losses`).
      lr: Adam learning rate, in image units (pixel values are in [0, 1]) per step; unused by L-BFGS.
      optimizer: how the pixels are optimised: ``"adam"``, or ``"lbfgs"`` (SciPy's L-BFGS-B
        within [0, 1], which often reaches the same loss sooner).
      init: start from the ``"content"`` image or from ``"noise"``.
      seed: seed of the noise (bit-for-bit repeatable on one machine).
      preserve_color: transfer style to luminance only, keep the content's colours.
      multiscale: coarse to fine, from `min_scale` px up to `size`, each scale `scale_ratio`
        times the previous; each starts from the previous one's result and Adam state.
      min_scale: longest side of the coarsest scale, px.
      scale_ratio: ratio of the longest sides of two consecutive scales (> 1).
      style_blend: one weight per style image (normalised to sum 1); None = equal.
      content_layer: the VGG layer whose activations carry the photo (`CONTENT_LAYERS`).
      style_scale: the style image is analysed with its longest side `style_scale` times the
        current scale's, never past its own pixels.
      average_decay: the result is the exponential moving average of the iterates with this
        decay per step (0: the last iterate), which smooths away the iterates' pixel noise.
    """

    size: int = 512
    steps: int = 300
    content_weight: float = 1.0
    style_weight: float = 10.0
    tv_weight: float = 10.0
    lr: float = 0.03
    init: str = "content"
    seed: int = 0
    preserve_color: bool = False
    multiscale: bool = True
    style_blend: tuple[float, ...] | None = None
    optimizer: str = "adam"
    min_scale: int = 256
    scale_ratio: float = 2.0
    content_layer: str = "block4_conv2"
    style_scale: float = 1.0
    average_decay: float = 0.99

    def validate(self, limits: Limits = Limits(), n_styles: int | None = None) -> "Options":
        """Check every field against `limits`; returns self. Raises OptionsError naming the field."""
        def bad(name, why):
            message = f"option {name!r} {why}"
            # "got ..." echoes what was sent, which may be a 400-digit number or a long string
            raise OptionsError(message if len(message) <= MESSAGE_MAX else message[:MESSAGE_MAX] + "…")

        for name in ("size", "steps", "seed", "min_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                bad(name, f"must be an integer, got {type(value).__name__}")
        if not limits.min_size <= self.size <= limits.max_size:
            bad("size", f"must be between {limits.min_size} and {limits.max_size}, got {self.size}")
        if not 1 <= self.steps <= limits.max_steps:
            bad("steps", f"must be between 1 and {limits.max_steps}, got {self.steps}")
        if not 0 <= self.seed < 2**32:
            bad("seed", f"must be between 0 and 2**32-1, got {self.seed}")
        for name in ("content_weight", "style_weight", "tv_weight", "lr"):
            value = getattr(self, name)
            if not _is_finite_number(value):
                bad(name, f"must be a finite number, got {value!r}")
            if value < 0 or (name == "lr" and not 0 < value <= 1):
                bad(name, "must be in (0, 1]" if name == "lr" else f"must not be negative, got {value}")
            if value > 1e12:
                bad(name, f"must be at most 1e12, got {value}")
        if not MIN_SCALE_RANGE[0] <= self.min_scale <= MIN_SCALE_RANGE[1]:
            bad("min_scale", f"must be between {MIN_SCALE_RANGE[0]} and {MIN_SCALE_RANGE[1]}, got {self.min_scale}")
        for name, (low, high) in (("scale_ratio", (1.1, 4.0)), ("style_scale", (0.1, 4.0)),
                                  ("average_decay", (0.0, 0.999))):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                bad(name, f"must be a number between {low} and {high}, got {value!r}")
        if self.content_layer not in CONTENT_LAYERS:
            bad("content_layer", f"must be one of {', '.join(CONTENT_LAYERS)}, got {self.content_layer!r}")
        if self.content_weight == 0 and self.style_weight == 0:
            bad("style_weight", "and content_weight cannot both be 0")
        if self.init not in ("content", "noise"):
            bad("init", f"must be 'content' or 'noise', got {self.init!r}")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"must be one of {', '.join(map(repr, OPTIMIZERS))}, got {self.optimizer!r}")
        for name in ("preserve_color", "multiscale"):
            if not isinstance(getattr(self, name), bool):
                bad(name, f"must be true or false, got {getattr(self, name)!r}")
        if self.style_blend is not None:
            blend = self.style_blend
            if not all(_is_finite_number(w) and w >= 0
                       for w in blend) or sum(blend) <= 0:
                bad("style_blend", "must be non-negative numbers with a positive sum")
            if n_styles is not None and len(blend) != n_styles:
                bad("style_blend", f"has {len(blend)} weights for {n_styles} style images")
        return self

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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise OptionsError(f"unknown option(s) {unknown}; known options are {sorted(known)}")
        if isinstance(values.get("style_blend"), list):
            values["style_blend"] = tuple(values["style_blend"])
        elif "style_blend" in values and values["style_blend"] is not None:
            raise OptionsError("option 'style_blend' must be a list of numbers")
        # JSON has one number type: accept 2.0 for an integer option, but not 2.5.
        for name in ("size", "steps", "seed", "min_scale"):
            v = values.get(name)
            if isinstance(v, float) and v.is_integer():
                values[name] = int(v)
        return cls(**values).validate(limits, n_styles)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["style_blend"] = list(self.style_blend) if self.style_blend is not None else None
        return d
