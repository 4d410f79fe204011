"""The L-BFGS optimizer option (`Options(optimizer="lbfgs")`): SciPy's L-BFGS-B on the pixels."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import gradient_image

import nst_jax
from nst_jax import batching, images, optim, transfer
from nst_jax.errors import Cancelled, OptionsError
from nst_jax.options import Options
from nst_jax.problem import Problem


@pytest.fixture(scope="module")
def problem(model):
    """(start image (1, 48, 64, 3), `Problem`) of one single-scale stylization."""
    content = gradient_image(48, 64, seed=1)[None]
    targets = transfer.targets(model, content, [gradient_image(48, 48, seed=2)[::-1]], np.ones(1), Options(), 0)
    return content, Problem.of(model, targets, {"content": [1.0], "style": [10.0], "tv": [0.01]})


def total_loss(model, problem, image) -> float:
    return float(optim.loss_and_grad(image, problem[1])[0])


def run(model, problem, optimizer, steps, report=lambda *_: True):
    start, objective = problem
    if optimizer == "lbfgs":
        return optim.run_lbfgs(jnp.asarray(start), objective, steps, report)
    # the last iterate, as L-BFGS gives (a fresh start image: Adam's compiled step donates it)
    carry = optim.AdamCarry.start(jnp.asarray(start))
    return optim.run_adam(carry, objective, jnp.asarray([Options().lr]), jnp.zeros(1), jnp.ones(1), steps,
                           report).image


def test_lbfgs_lowers_the_loss_more_than_as_many_adam_steps(model, problem):
    start = total_loss(model, problem, problem[0])
    adam = total_loss(model, problem, run(model, problem, "adam", 10))
    lbfgs = run(model, problem, "lbfgs", 10)
    assert lbfgs.shape == problem[0].shape and lbfgs.dtype == jnp.float32
    assert 0.0 <= float(lbfgs.min()) and float(lbfgs.max()) <= 1.0
    # Measured: start 0.536, Adam (default lr) 0.227, L-BFGS 0.185.
    assert total_loss(model, problem, lbfgs) < min(0.95 * adam, 0.5 * start)


def test_reports_are_of_each_iterate_and_false_stops_at_once(model, problem):
    seen = []
    def report(done, losses, image, evaluations):
        seen.append((done, float(losses[0]), total_loss(model, problem, image)))
        return done < 3
    out = run(model, problem, "lbfgs", 10, report)
    assert [d for d, _, _ in seen] == [1, 2, 3]
    # The reported loss is that of the reported image, and the last reported image is returned.
    np.testing.assert_allclose([loss for _, loss, _ in seen], [loss for _, _, loss in seen], rtol=1e-5)
    assert seen[-1][1] < seen[0][1]
    assert total_loss(model, problem, out) == pytest.approx(seen[-1][2], rel=1e-6)


def test_stylize_with_lbfgs_reports_every_iteration_up_to_the_total(model):
    content, style = gradient_image(40, 56, seed=1), gradient_image(48, 48, seed=2)[:, ::-1]
    reports = []
    out = nst_jax.stylize(content, [style], Options(size=48, steps=6, optimizer="lbfgs"), model=model,
                          on_progress=reports.append)
    assert out.shape == (34, 48, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert [r.step for r in reports] == list(range(1, 7)) and reports[-1].total == 6
    assert reports[-1].loss < reports[0].loss
    assert reports[-1].preview is not None and reports[-1].preview.shape == (*reports[-1].shape, 3)


def test_progress_reaches_the_total_when_lbfgs_stops_early(model):
    """Content loss only, from the content in its own colours: the start is (nearly) optimal, so L-BFGS-B stops
    at once; the last report still says step == total and brings a preview."""
    content = gradient_image(40, 56, seed=3)
    options = Options(size=56, steps=20, style_weight=0, tv_weight=0, optimizer="lbfgs", match_colors=False)
    reports = []
    nst_jax.stylize(content, [gradient_image(32, 32)], options, model=model, on_progress=reports.append)
    steps = [r.step for r in reports]
    assert len(steps) < 20 and steps == sorted(set(steps)) and steps[-1] == reports[-1].total == 20
    last = reports[-1]
    assert last.loss < 1e-6
    np.testing.assert_allclose(last.preview, images.resize(content, *last.shape), atol=1e-3)


def test_cancelling_from_on_progress_stops_lbfgs_and_propagates(model):
    seen = []
    def stop_at_two(p):
        seen.append(p.step)
        if p.step == 2:
            raise Cancelled()
    options = Options(size=32, steps=50, optimizer="lbfgs")
    with pytest.raises(Cancelled):
        nst_jax.stylize(gradient_image(32, 32), [gradient_image(32, 32, seed=1)], options, model=model,
                        on_progress=stop_at_two)
    assert seen == [1, 2]


def test_lbfgs_jobs_are_never_batched(model):
    # L-BFGS would share one line search across a batch: each job runs alone, so that its
    # result does not depend on the requests it happened to arrive with.
    adam = transfer.Job(gradient_image(32, 32), [gradient_image(32, 32, seed=1)], Options(size=32, steps=3))
    lbfgs = transfer.Job(adam.content, adam.styles, Options(size=32, steps=3, optimizer="lbfgs"))
    twin = transfer.Job(gradient_image(32, 32, seed=2), adam.styles, lbfgs.options)
    assert batching.batch_key(lbfgs) is None and batching.batch_key(twin) is None
    assert batching.batch_key(adam) is not None
    assert batching.batch_key(adam) == batching.batch_key(transfer.Job(twin.content, adam.styles, adam.options))
    with pytest.raises(ValueError, match="batch_key"):
        transfer.stylize_batch([adam, lbfgs], model)
    with pytest.raises(ValueError, match="batch_key"):
        transfer.stylize_batch([lbfgs, twin], model)


@pytest.mark.parametrize("value", ["sgd", "LBFGS", None, ["lbfgs"]])
def test_an_unknown_optimizer_is_an_options_error(value):
    with pytest.raises(OptionsError, match="optimizer.*'adam', 'lbfgs'"):
        Options.from_mapping({"optimizer": value})
