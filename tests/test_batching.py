"""Batching: jobs of one `batching.batch_key` run together and give what each gives alone."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gradient_image

import nst_jax
from nst_jax import batching, optim, transfer
from nst_jax.errors import Cancelled
from nst_jax.options import Options


def test_a_batch_gives_what_each_job_gives_alone(model):
    style_a, style_b = gradient_image(32, 32, seed=13), gradient_image(40, 30, seed=14)
    def options(**values):  # the recipe this test was written for: its tolerances are of its rounding
        return Options.from_mapping({"recipe": "thorough", "size": 48, "steps": 3, **values})
    jobs = [transfer.Job(gradient_image(30, 48, seed=15), [style_a], options()),
            transfer.Job(gradient_image(31, 48, seed=16), [style_b],
                         options(lr=0.1, style_weight=50, init="noise", seed=3))]
    assert batching.batch_key(jobs[0]) == batching.batch_key(jobs[1])
    together = transfer.stylize_batch(jobs, model)
    for job, out in zip(jobs, together):
        alone = nst_jax.stylize(job.content, job.styles, job.options, model=model)
        # A batch's convolutions round differently. Adam's first steps are nearly lr * sign(gradient),
        # so where the gradient is ~0 (flat parts of a content-initialised image, or pixels that no
        # max-pooling window picks) a pixel may step either way: bounded by the steps taken, and
        # rare (under 1% of the values of the noise-initialised job on one CI machine), so compare
        # how many differ and on average too.
        np.testing.assert_allclose(out, alone, atol=job.options.steps * job.options.lr)
        assert np.mean(np.abs(out - alone) > 2e-3) < 0.02 and np.mean(np.abs(out - alone)) < 1e-3
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



def test_batches_run_at_a_few_sizes():
    assert [batching.batch_size_for(n, 4) for n in (1, 2, 3, 4)] == [1, 2, 4, 4]
    assert [batching.batch_size_for(n, 6) for n in (3, 5, 6)] == [4, 6, 6]
    assert batching.batch_size_for(5, 4) == 5  # never fewer than the jobs
    assert batching.batch_sizes(1) == (1,) and batching.batch_sizes(4) == (1, 2, 4)
    assert batching.batch_sizes(6) == (1, 2, 4, 6) and batching.batch_sizes(8) == (1, 2, 4, 8)


def test_a_padded_batch_gives_its_jobs_what_the_batch_alone_gives(model, monkeypatch):
    reports = []
    jobs = [transfer.Job(gradient_image(32, 32, seed=s), [gradient_image(32, 32, seed=s + 1)],
                         Options(size=32, steps=3), reports.append) for s in (4, 6, 8)]
    plain = transfer.stylize_batch(jobs, model)
    plain_reports = len(reports)
    padded = transfer.stylize_batch(jobs, model, batch_size=4)
    assert len(padded) == 3 and len(reports) == 2 * plain_reports  # the padding reports to no one
    for a, b in zip(plain, padded):
        np.testing.assert_allclose(b, a, atol=3 * 0.03)  # a batch's convolutions round differently
        assert np.mean(np.abs(b - a)) < 1e-3
    with pytest.raises(ValueError, match="cannot run as 2"):
        transfer.stylize_batch(jobs, model, batch_size=2)
    with pytest.raises(ValueError, match="cannot run as 2"):
        transfer.stylize_batch([transfer.Job(jobs[0].content, jobs[0].styles, Options(size=32, optimizer="lbfgs"))],
                               model, batch_size=2)

    def stop(progress):
        raise Cancelled()
    calls = []
    run_steps = optim.run_steps
    monkeypatch.setattr(optim, "run_steps", lambda *args: calls.append(1) or run_steps(*args))
    stopped = transfer.stylize_batch([transfer.Job(jobs[0].content, jobs[0].styles, jobs[0].options, stop)], model,
                                     batch_size=2)
    assert isinstance(stopped[0], Cancelled) and len(stopped) == 1
    assert calls == [1], "the batch went on for its padding alone"
