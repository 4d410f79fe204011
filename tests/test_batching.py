"""Batching: jobs of one `transfer.batch_key` run together and give what each gives alone."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gradient_image

import nst_jax
from nst_jax import transfer
from nst_jax.errors import Cancelled
from nst_jax.options import Options


def test_a_batch_gives_what_each_job_gives_alone(model):
    style_a, style_b = gradient_image(32, 32, seed=13), gradient_image(40, 30, seed=14)
    def options(**values):  # the recipe this test was written for: its tolerances are of its rounding
        return Options.from_mapping({"recipe": "thorough", "size": 48, "steps": 3, **values})
    jobs = [transfer.Job(gradient_image(30, 48, seed=15), [style_a], options()),
            transfer.Job(gradient_image(31, 48, seed=16), [style_b],
                         options(lr=0.1, style_weight=50, init="noise", seed=3))]
    assert transfer.batch_key(jobs[0]) == transfer.batch_key(jobs[1])
    together = transfer.stylize_batch(jobs, model)
    for job, out in zip(jobs, together):
        alone = nst_jax.stylize(job.content, job.styles, job.options, model=model)
        # A batch's convolutions round differently. Adam's first steps are nearly lr * sign(gradient),
        # so where the gradient is ~0 (flat parts of a content-initialised image) a pixel may step
        # either way: bounded by the steps taken, and rare, so compare on average too.
        np.testing.assert_allclose(out, alone, atol=job.options.steps * job.options.lr)
        assert np.mean(np.abs(out - alone)) < 1e-3
    np.testing.assert_allclose(together[1], nst_jax.stylize(jobs[1].content, jobs[1].styles, jobs[1].options,
                                                            model=model), atol=2e-3)  # noise init: no ~0 gradients
    assert np.abs(together[0] - together[1][:30]).max() > 0.05


def test_a_stopped_job_leaves_the_rest_of_its_batch_running(model):
    def stop(p):
        raise Cancelled()
    seen = []
    jobs = [transfer.Job(gradient_image(32, 32), [gradient_image(32, 32, seed=1)], Options(size=32, steps=3), stop),
            transfer.Job(gradient_image(32, 32, seed=2), [gradient_image(32, 32, seed=3)], Options(size=32, steps=3),
                         seen.append)]
    assert transfer.stylize_batch([], model) == []
    stopped, finished = transfer.stylize_batch(jobs, model)
    assert isinstance(stopped, Cancelled)
    assert finished.shape == (32, 32, 3) and [p.step for p in seen] == [1, 2, 3]
    with pytest.raises(ValueError, match="batch_key"):
        transfer.stylize_batch([jobs[1], transfer.Job(gradient_image(32, 64), jobs[1].styles, Options(size=64))],
                               model)

