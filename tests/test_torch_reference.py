"""The PyTorch reference of the benchmarks computes what NeuraStyle computes: same losses,
same input gradient, same Adam trajectory (random weights, small images; float32 on CPU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import gradient_image, random_weights

from nst_jax import model as model_lib
from nst_jax import optim, problem as problem_lib, transfer
from nst_jax.options import Options

torch = pytest.importorskip("torch")
from benchmarks import torch_reference  # noqa: E402 -- needs torch

OPTIONS = Options(size=64, style_weight=1e4, tv_weight=1e-2, lr=0.02)
TERMS = ("content", "style", "tv")
SHAPE = (48, 64)  # a bucketed working shape, so transfer.targets does not resize the style


@pytest.fixture(scope="module")
def setup():
    w = random_weights("vgg16", seed=3)
    content, style = gradient_image(*SHAPE, seed=1), gradient_image(*SHAPE, seed=2)
    jax_model = model_lib.from_weights(w)
    targets = transfer.targets(jax_model, content[None], [style], np.ones(1), OPTIONS, 0)
    problem = problem_lib.Problem.of(jax_model, targets, problem_lib.loss_weights([OPTIONS]))
    torch_run = torch_reference.TorchStylizer(torch_reference.TorchVGG(w), content, style, OPTIONS)
    return problem, torch_run, content


def relative_difference(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_loss_terms_and_input_gradient_match(setup):
    problem, torch_run, content = setup
    # Away from the content image, so every term and its gradient is far from zero; and with no
    # saturated (flat) areas, whose equal activations tie in max-pooling, where the two libraries
    # may route the gradient to different (equally valid) inputs.
    image = 0.1 + 0.8 * gradient_image(*SHAPE, seed=4)
    x = jnp.asarray(image[None])
    loss, grad = jax.value_and_grad(lambda x: problem.loss(x)[0])(x)
    terms = np.asarray([problem.terms(x)[name] for name in TERMS]).T  # (1, 3)

    x = torch_reference.to_nchw(image).requires_grad_(True)
    torch_loss, torch_terms = torch_run.objective(x)
    torch_loss.backward()
    torch_grad = x.grad[0].permute(1, 2, 0).numpy()

    assert np.all(np.asarray(terms[0]) > 0)
    np.testing.assert_allclose([torch_terms[name].item() for name in TERMS], np.asarray(terms[0]), rtol=1e-3)
    assert relative_difference(torch_loss.item(), float(loss)) < 1e-3
    assert relative_difference(torch_grad, grad[0]) < 1e-3


def test_adam_steps_follow_the_same_trajectory(setup):
    problem, torch_run, content = setup
    # From an image away from the content (every pixel has a gradient: see the test above), since
    # Adam's first steps are nearly lr * sign(gradient), which rounding flips where it is ~0.
    start = 0.1 + 0.8 * gradient_image(*SHAPE, seed=5)
    jax_losses = []
    carry = optim.run_adam(optim.AdamCarry.start(jnp.asarray(start[None])), problem,
                       jnp.asarray([OPTIONS.lr], jnp.float32), jnp.zeros(1), jnp.ones(1),  # Adam on R, G, B
                       5, lambda done, losses, image, evaluations: jax_losses.append(float(losses[0])) or True)
    result = carry.image  # the iterate: PyTorch's reference does not average
    torch_run.reset(start)
    torch_losses = [torch_run.step() for _ in range(5)]

    np.testing.assert_allclose(torch_losses, jax_losses, rtol=1e-3)
    assert jax_losses[-1] < jax_losses[0]
    # Adam's first steps are nearly sign(gradient) * lr: pixels whose gradient is ~0 may go
    # either way, so compare the images on average, not pixel by pixel.
    assert np.mean(np.abs(torch_run.result() - np.asarray(result[0]))) < 1e-4
    assert 0 <= torch_run.result().min() and torch_run.result().max() <= 1
