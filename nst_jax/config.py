"""The library's configuration: what the environment says, read once into one frozen object.

`current()` is the process's, read from `os.environ` on first use; `Config.from_env(environ)`
reads any mapping (the HTTP function's `Settings` embeds one). What needs it (the weights file,
the model's precision, the compilation cache) takes a `Config` or uses `current()`.

Environment: NEURASTYLE_WEIGHTS, NEURASTYLE_WEIGHTS_DIR, NEURASTYLE_COMPILATION_CACHE ("off"
disables it), NEURASTYLE_PRECISION. (A deployment's limits on options are its settings'.)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nst_jax.errors import OptionsError

PRECISIONS = ("float32", "bfloat16")
CHECKOUT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"  # weights/ beside the package


def default_compilation_cache() -> Path:
    return Path.home() / ".cache" / "neurastyle" / "xla"


def env_number(name: str, default: float, environ: Mapping[str, str], *,
               integer: bool = False, low: float = 0, high: float = math.inf) -> float:
    """The number in environment variable `name` of `environ`, or `default` where it is unset
    or blank; a whole number where `integer`, within [low, high]. The one reader of numeric
    settings. Raises OptionsError naming the variable."""
    raw = environ.get(name, "").strip()
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


def env_choice(name: str, default: str, choices: tuple[str, ...], environ: Mapping[str, str]) -> str:
    """The word in environment variable `name` of `environ` (case and surrounding blanks
    ignored), one of `choices`, or `default` where it is unset or blank. The one reader of
    settings that name one of a few values. Raises OptionsError naming the variable."""
    raw = environ.get(name, "")
    value = raw.strip().lower()
    if not value:
        return default
    if value not in choices:
        raise OptionsError(f"environment variable {name}={raw!r} must be one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class Config:
    """Where the library finds its files and how it runs.

    Attributes:
      weights: the weights file to load when none is named; None: the first of
        `nst_jax.weights.DEFAULT_FILES` in `weights_dir`.
      weights_dir: where `nst-jax weights fetch` saves and the default files are looked for.
      compilation_cache: the persistent compilation cache's folder; None: off.
      precision: the convolutions' dtype, "float32" or "bfloat16" (`nst_jax.model.load_model`).
    """

    weights: Path | None = None
    weights_dir: Path = CHECKOUT_WEIGHTS_DIR
    compilation_cache: Path | None = field(default_factory=default_compilation_cache)
    precision: str = "float32"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "Config":
        """The configuration `environ` gives (unset or blank variables: the defaults, but a blank
        NEURASTYLE_COMPILATION_CACHE, like `off`, turns the cache off). Raises OptionsError naming
        a malformed variable."""
        cache = environ.get("NEURASTYLE_COMPILATION_CACHE")
        return cls(
            weights=Path(environ["NEURASTYLE_WEIGHTS"]) if environ.get("NEURASTYLE_WEIGHTS") else None,
            weights_dir=Path(environ.get("NEURASTYLE_WEIGHTS_DIR") or CHECKOUT_WEIGHTS_DIR),
            compilation_cache=(default_compilation_cache() if cache is None else
                               None if cache in ("", "off") else Path(cache)),
            precision=env_choice("NEURASTYLE_PRECISION", cls.precision, PRECISIONS, environ),
        )


_current: Config | None = None


def current() -> Config:
    """The process's configuration, read from `os.environ` the first time it is asked for."""
    global _current
    if _current is None:
        _current = Config.from_env(os.environ)
    return _current
