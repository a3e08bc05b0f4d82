"""The HIS sampler, EC-Diff approximation and greedy search, against diffusers' own pipelines.

References are independent of the sampler: the stock diffusers pipelines (with a step-end callback
that switches prompt, guidance and model where HIS does), hand-computed EC-Diff sequences and
SSIM values, and `quality_oracle.ecdiff` call counts. Models are tiny and random (tests/live_fixtures.py).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from quality_oracle.live import tiny_models as lf

from quality_oracle.ecdiff import real_call_mask, real_calls
from quality_oracle.ecdiff import ECDiffSchedule
from quality_oracle.live.ecdiff_sampler import KStepNoiseApproximator, NoiseState
from quality_oracle.live.greedy_search import (ECDiffObjective, burden, efficiency, greedy_line_search,
                                               objective, search_approximation, ssim, two_stage_search)
from quality_oracle.live.sampler import (ClusterPlan, Guidance, HISSampler, UnsupportedPipelineError,
                                         UserPlan, make_backend)

torch.set_num_threads(1)
SEQ = 32  # T5 tokens of the tiny SD3 pipelines
SIZE = 32


@pytest.fixture(scope="module")
def sd3():
    return lf.tiny_sd3_pipeline()


@pytest.fixture(scope="module")
def sd3_ue():
    # same text encoders and VAE as `sd3` (seed 0), a different transformer: a "smaller" UE model
    return lf.tiny_sd3_pipeline(transformer_seed=7)


@pytest.fixture(scope="module")
def sd():
    return lf.tiny_sd_pipeline()


def _gen(seed):
    return torch.Generator("cpu").manual_seed(seed)


def _sampler(pipe, ue=None, **kw):
    return HISSampler(pipe, ue, height=SIZE, width=SIZE, max_sequence_length=SEQ, **kw)


def _pipeline_his(pipe, ue_transformer, public, personal, negative, x, y, z, w1, w2, seed):
    """HIS with the stock StableDiffusion3Pipeline: a step-end callback switches the prompt and
    guidance after x steps and the transformer after x + y steps."""
    pe, ne, pp, npool = pipe.encode_prompt(personal, None, None, do_classifier_free_guidance=True,
                                           negative_prompt=negative or None, max_sequence_length=SEQ)
    personal_embeds, personal_pooled = torch.cat([ne, pe]), torch.cat([npool, pp])
    es_transformer = pipe.transformer

    def switch(p, i, t, kwargs):
        out = {}
        if i + 1 == x:
            p._guidance_scale = w2
            out = {"prompt_embeds": personal_embeds, "pooled_prompt_embeds": personal_pooled}
        if i + 1 == x + y:
            p.transformer = ue_transformer
        return out

    if x + y == 0:
        pipe.transformer = ue_transformer
    try:
        first = (public, None, w1) if x > 0 else (personal, negative or None, w2)
        return pipe(first[0], negative_prompt=first[1], guidance_scale=first[2], num_inference_steps=x + y + z,
                    height=SIZE, width=SIZE, generator=_gen(seed), output_type="latent",
                    max_sequence_length=SEQ, callback_on_step_end=switch,
                    callback_on_step_end_tensor_inputs=["prompt_embeds", "pooled_prompt_embeds"]).images
    finally:
        pipe.transformer = es_transformer


# ----------------------------------------------------------------------------- x = 0: plain pipelines


@pytest.mark.parametrize("negative", ["", "a blurry dog"])
def test_sd3_x0_equals_pipeline(sd3, negative):
    ref = sd3("a red cat", negative_prompt=negative or None, guidance_scale=5.0, num_inference_steps=4,
              height=SIZE, width=SIZE, generator=_gen(3), output_type="latent", max_sequence_length=SEQ).images
    out = _sampler(sd3).run([ClusterPlan("unused public", (UserPlan("a red cat", negative, 0, 4, 0),), seed=3)],
                            guidance=Guidance(2.0, 5.0))
    torch.testing.assert_close(out.latents[0], ref, atol=2e-5, rtol=1e-4)


def test_sd3_decode_equals_pipeline_images(sd3):
    ref = sd3("a red cat", guidance_scale=5.0, num_inference_steps=3, height=SIZE, width=SIZE,
              generator=_gen(1), output_type="pt", max_sequence_length=SEQ).images
    images, _ = _sampler(sd3).generate([ClusterPlan("p", (UserPlan("a red cat", "", 0, 3, 0),), seed=1)],
                                       guidance=Guidance(2.0, 5.0))
    torch.testing.assert_close(images[0], ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("negative", ["", "a dark room"])
def test_ddim_unet_x0_equals_pipeline(sd, negative):
    ref = sd("a red cat", negative_prompt=negative or None, guidance_scale=6.0, num_inference_steps=4,
             height=SIZE, width=SIZE, generator=_gen(2), output_type="latent").images
    out = _sampler(sd).run([ClusterPlan("x", (UserPlan("a red cat", negative, 0, 4, 0),), seed=2)],
                           guidance=Guidance(2.0, 6.0))
    torch.testing.assert_close(out.latents[0], ref, atol=2e-5, rtol=1e-4)


def test_sdxl_x0_equals_pipeline():
    # SDXL's unconditional prediction without a negative prompt uses zero embeddings
    sdxl = lf.tiny_sdxl_pipeline()
    for negative in ("", "a dark room"):
        ref = sdxl("a red cat", negative_prompt=negative or None, guidance_scale=6.0, num_inference_steps=3,
                   height=SIZE, width=SIZE, generator=_gen(4), output_type="latent").images
        out = _sampler(sdxl).run([ClusterPlan("x", (UserPlan("a red cat", negative, 0, 3, 0),), seed=4)],
                                 guidance=Guidance(2.0, 6.0))
        torch.testing.assert_close(out.latents[0], ref, atol=5e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- HIS phases


def test_shared_run_equals_independent_runs(sd3):
    """public == personal, w1 == w2, no negative: every x gives the independent image."""
    T, prompt = 5, "a small green frog"
    ue_steps = [1 if x % 2 and x < T else 0 for x in range(T + 1)]  # some users end on the "UE"
    users = tuple(UserPlan(prompt, "", x, T - x - z, z) for x, z in zip(range(T + 1), ue_steps))
    out = _sampler(sd3, batch_size=3).run([ClusterPlan(prompt, users, seed=11)], guidance=Guidance(4.0, 4.0))
    ref = sd3(prompt, guidance_scale=4.0, num_inference_steps=T, height=SIZE, width=SIZE, generator=_gen(11),
              output_type="latent", max_sequence_length=SEQ).images
    for n in range(len(users)):
        torch.testing.assert_close(out.latents[0][n:n + 1], ref, atol=3e-5, rtol=1e-4)


def test_two_phase_with_ue_handoff_equals_pipeline_with_switches(sd3, sd3_ue):
    """Common (public, w1) -> personal I on ES (personal + NPI, w2) -> personal II on the UE model."""
    users = (UserPlan("a brown cat on a table", "a grey cat", 2, 2, 2),
             UserPlan("a white cat by a window", "", 4, 1, 1),
             UserPlan("a black cat in a garden", "a happy dog", 0, 3, 3),
             UserPlan("a striped cat", "a dull cat", 3, 0, 3))
    cluster = ClusterPlan("a cat in a cozy place", users, seed=5)
    out = _sampler(sd3, sd3_ue, batch_size=2).run([cluster], guidance=Guidance(2.0, 7.0))
    assert out.stats.common_calls == [4]
    assert out.stats.personal_calls == [[2, 1, 3, 0]] and out.stats.ue_calls == [[2, 1, 3, 3]]
    for n, u in enumerate(users):
        ref = _pipeline_his(sd3, sd3_ue.transformer, cluster.public_prompt, u.personal_prompt, u.negative_prompt,
                            u.common_steps, u.es_personal_steps, u.ue_steps, 2.0, 7.0, seed=5)
        torch.testing.assert_close(out.latents[0][n:n + 1], ref, atol=5e-5, rtol=1e-4)


def test_clusters_batched_together_equal_clusters_alone(sd3):
    a = ClusterPlan("a dog", (UserPlan("a big dog", "a cat", 1, 2, 0), UserPlan("a small dog", "", 2, 1, 0)), seed=1)
    b = ClusterPlan("a house", (UserPlan("a red house", "a ruin", 2, 1, 0),), seed=2)
    s = _sampler(sd3, batch_size=8)
    both = s.run([a, b])
    torch.testing.assert_close(both.latents[0], s.run([a]).latents[0], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(both.latents[1], s.run([b]).latents[0], atol=2e-5, rtol=1e-4)
    assert both.stats.es_forwards == 3  # every step in one batched forward


def test_same_seed_same_image_and_seed_changes_it(sd3):
    plan = lambda seed: [ClusterPlan("a", (UserPlan("a cat", "", 1, 1, 0),), seed=seed)]  # noqa: E731
    s = _sampler(sd3)
    assert torch.equal(s.run(plan(3)).latents[0], s.run(plan(3)).latents[0])
    assert not torch.allclose(s.run(plan(3)).latents[0], s.run(plan(4)).latents[0])


# ----------------------------------------------------------------------------- EC-Diff


def test_approximator_follows_alg1_by_hand():
    """Mask T T T F F T F T (p=3, k=2, start 0, length 8); real outputs 1, 3, 4 then 10, 12."""
    sched = ECDiffSchedule(pre_inference_calls=3, approx_steps=2, smoothing=0.5, reinit_calls=2)
    a = KStepNoiseApproximator(sched, 0, 8)
    assert a.mask.tolist() == [True, True, True, False, False, True, False, True]
    one = lambda v: torch.tensor([float(v)])  # noqa: E731
    a.observe(0, one(1)); a.observe(1, one(3)); a.observe(2, one(4))  # warm-up: delta = 4 - 3 = 1
    assert a.approximate(3).item() == 5.0  # 4 + 1
    assert a.approximate(4).item() == 6.0  # 5 + 1
    a.observe(5, one(10))  # delta = 0.5 * (10 - 6) = 2   (Eq. 6)
    assert a.approximate(6).item() == 12.0
    a.observe(7, one(12))
    assert a.real_calls == 5
    with pytest.raises(RuntimeError):
        a.approximate(7)


def test_approximator_reuses_or_carries_state_without_two_real_calls():
    sched = ECDiffSchedule(pre_inference_calls=0, approx_steps=1, smoothing=0.3, reinit_calls=1)
    a = KStepNoiseApproximator(sched, 5, 4)  # mask T F T T
    a.observe(0, torch.tensor([2.0]))
    assert a.approximate(1).item() == 2.0  # one real call: zero gradient
    carried = NoiseState(torch.tensor([1.0]), torch.tensor([0.5]))
    b = KStepNoiseApproximator(ECDiffSchedule(0, 1, 0.3, 0), 5, 4, carried)  # mask F T F T
    assert b.approximate(0).item() == 1.5
    with pytest.raises(ValueError, match="before any real model call"):
        KStepNoiseApproximator(ECDiffSchedule(0, 1, 0.3, 0), 0, 4).approximate(0)


def test_ecdiff_off_equals_plain_run(sd3):
    users = (UserPlan("a grey cat", "a dog", 3, 3, 0), UserPlan("a cat", "", 1, 5, 0))
    clusters = [ClusterPlan("a cat", users, seed=9)]
    s = _sampler(sd3)
    plain = s.run(clusters)
    no_approx = s.run(clusters, ecdiff=ECDiffSchedule(pre_inference_calls=2, approx_steps=0, smoothing=0.3,
                                                      reinit_calls=2))
    assert torch.equal(plain.latents[0], no_approx.latents[0])


def test_ecdiff_model_calls_equal_real_call_mask(sd3, sd3_ue):
    x, y, z = 6, 4, 2
    sched = ECDiffSchedule(pre_inference_calls=3, approx_steps=2, smoothing=0.3, reinit_calls=2)
    calls = {"es": 0, "ue": 0}
    es_forward, ue_forward = sd3.transformer.forward, sd3_ue.transformer.forward

    def counted(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper

    sd3.transformer.forward = counted("es", es_forward)
    sd3_ue.transformer.forward = counted("ue", ue_forward)
    try:
        out = _sampler(sd3, sd3_ue).run([ClusterPlan("a cat", (UserPlan("a grey cat", "a dog", x, y, z),), seed=0)],
                                        ecdiff=sched)
    finally:
        del sd3.transformer.forward, sd3_ue.transformer.forward
    common = real_call_mask(0, x, 3, 2, 2)
    personal = real_call_mask(x, y, 3, 2, 2)
    assert common.tolist() == [True, True, True, False, False, True]
    assert calls == {"es": int(common.sum() + personal.sum()), "ue": z}
    assert out.stats.common_calls == [int(real_calls(0, x, 3, 2, 2))]
    assert out.stats.personal_calls == [[int(real_calls(x, y, 3, 2, 2))]]
    assert out.stats.approximated == [[int(y - personal.sum())]]
    assert torch.isfinite(out.latents[0]).all()
    plain = _sampler(sd3, sd3_ue).run([ClusterPlan("a cat", (UserPlan("a grey cat", "a dog", x, y, z),), seed=0)])
    assert not torch.equal(plain.latents[0], out.latents[0])


# ----------------------------------------------------------------------------- errors


def test_unsupported_and_incompatible_pipelines(sd3, sd):
    with pytest.raises(UnsupportedPipelineError, match="unsupported pipeline type object"):
        make_backend(object())
    with pytest.raises(UnsupportedPipelineError, match="family"):
        HISSampler(sd3, sd)
    with pytest.raises(ValueError, match="same x \\+ y \\+ z"):
        _sampler(sd3).run([ClusterPlan("a", (UserPlan("b", "", 1, 1, 0), UserPlan("c", "", 1, 2, 0)), seed=0)])
    with pytest.raises(ValueError, match="patch size"):
        HISSampler(sd3, height=33, width=32, max_sequence_length=SEQ).run(
            [ClusterPlan("a", (UserPlan("b", "", 0, 1, 0),), seed=0)])


# ----------------------------------------------------------------------------- SSIM and greedy search


def test_ssim_of_constant_images_by_hand():
    # mu_x = a, mu_y = b, no variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01)^2
    x = torch.full((1, 3, 16, 16), 0.2, dtype=torch.float64)
    y = torch.full((1, 3, 16, 16), 0.6, dtype=torch.float64)
    expected = (2 * 0.2 * 0.6 + 1e-4) / (0.04 + 0.36 + 1e-4)
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-9)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)


def test_ssim_single_window_by_hand():
    """An 11x11 image is one window: Gaussian-weighted moments computed directly with numpy."""
    rng = np.random.default_rng(0)
    a, b = rng.random((11, 11)), rng.random((11, 11))
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    mx, my = (w * a).sum(), (w * b).sum()
    vx, vy, cxy = (w * (a - mx) ** 2).sum(), (w * (b - my) ** 2).sum(), (w * (a - mx) * (b - my)).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    expected = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    got = ssim(torch.tensor(a).view(1, 1, 11, 11), torch.tensor(b).view(1, 1, 11, 11)).item()
    assert got == pytest.approx(expected, rel=1e-9)


def test_objective_terms():
    assert efficiency(1.7, 1.1, 1.16) == pytest.approx(0.54 / 0.6)  # EC-Diff Table 6, SD-v1.4
    assert burden(50, 30, 30) == 1.0 and burden(50, 40, 30) == 0.5
    assert objective(1.0, 0.5, 0.5) == pytest.approx(0.3 + 0.15 + 0.2)


def test_greedy_line_search_path_and_early_stop():
    calls = []

    def f(v):
        calls.append(v)
        return -abs(v - 0.7)

    r = greedy_line_search(f, [round(0.1 * i, 1) for i in range(1, 10)], 0.5)
    # up 0.6, 0.7 (better), 0.8 worse -> turn: 0.4 worse -> turn: 0.9 worse -> stop after 3
    assert calls == [0.5, 0.6, 0.7, 0.8, 0.4, 0.9]
    assert r.best == 0.7
    # the best k beats the others; k search stops after three k that do not improve
    seen = []
    k, alpha, value, per_k = search_approximation(lambda k, a: seen.append(k) or -(k - 2) ** 2 - abs(a - 0.3))
    assert (k, alpha) == (2, 0.3) and sorted(per_k) == [1, 2, 3, 4, 5]
    _, _, _, per_k = search_approximation(lambda k, a: -k, k_values=range(1, 9))
    assert sorted(per_k) == [1, 2, 3, 4]


def test_two_stage_search_on_a_known_objective():
    f = lambda k, a, s: -(k - 3) ** 2 - (a - 0.2) ** 2 - 0.01 * (s - 33) ** 2  # noqa: E731
    r = two_stage_search(f, switch_values=range(30, 41), switch_start=35)
    assert (r.approx_steps, r.smoothing, r.switch) == (3, 0.2, 33)


def test_ecdiff_objective_with_the_live_sampler(sd3, sd3_ue):
    obj = ECDiffObjective(_sampler(sd3, sd3_ue), ["a cat", "a dog"], total_steps=8, pre_inference_calls=2,
                          earliest_switch=4, step_costs=(1.0, 0.5))
    value = obj(2, 0.3, 6)
    calls = int(real_calls(0, 6, 2, 2, 0))  # 2 + ceil(4 / 3) = 4
    t_ec = calls * 1.0 + 2 * 0.5
    quality = (value - 0.3 * efficiency(8, 4, t_ec) - 0.4 * burden(8, 6, 4)) / 0.3
    assert 0.0 < quality < 1.0  # an SSIM against the cloud-only image, which differs
    assert math.isclose(obj(0, 0.3, 8) - 0.3 * efficiency(8, 4, 8) - 0.4 * burden(8, 8, 4), 0.3, rel_tol=1e-9)
