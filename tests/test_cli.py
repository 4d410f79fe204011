"""The command line's options: the same `Options` (and validation) as the HTTP function's."""

from __future__ import annotations

import pytest

from nst_jax.cli import build_parser, stylize_options
from nst_jax.errors import OptionsError
from nst_jax.options import RECIPES, Options


def options(*flags: str, styles: int = 1) -> Options:
    args = build_parser().parse_args(["stylize", "c.png", *(["s.png"] * styles), "-o", "o.png", *flags])
    return stylize_options(args)


def test_no_flags_give_the_default_options():
    assert options() == Options()


def test_flags_set_options():
    o = options("--optimizer", "lbfgs", "--content-layer", "block5_conv2", "--style-scale", "0.5",
                "--single-scale", "--preserve-color", "--average-decay", "0")
    assert (o.optimizer, o.content_layer, o.style_scale, o.multiscale, o.preserve_color, o.average_decay) == (
        "lbfgs", "block5_conv2", 0.5, False, True, 0.0)
    assert options("--style-blend", "1", "3", styles=2).style_blend == (1.0, 3.0)


def test_a_recipe_sets_its_options_and_flags_override_it():
    seed = options("--recipe", "seed")
    assert seed == Options(**RECIPES["seed"])
    assert seed.content_layer == "block5_conv2" and seed.init == "noise"
    assert options("--recipe", "seed", "--init", "content").init == "content"


def test_bad_values_are_refused():
    with pytest.raises(SystemExit):
        options("--optimizer", "sgd")
    with pytest.raises(SystemExit):
        options("--content-layer", "block9_conv1")
    with pytest.raises(OptionsError, match="style_scale"):
        options("--style-scale", "9")
    with pytest.raises(OptionsError, match="2 weights for 1"):
        options("--style-blend", "1", "2")
