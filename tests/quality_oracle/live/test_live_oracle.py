"""LiveDiffusionOracle: protocol, scores against an independent CLIP path, cache, options, errors.

The tiny SD3 pipeline and CLIP model are saved to a temporary folder and loaded by path, as a
user's would be. CLIP scores are checked against `CLIPModel.forward`'s own image-text logits
(divided by the logit scale), not against the scorer's feature path.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from quality_oracle.live import tiny_models as lf

from quality_oracle.base import ECDiffSchedule, QualityOracle, QualityRequest
from quality_oracle.live import oracle as oracle_module
from quality_oracle.live.clip_score import CLIPScorer
from quality_oracle.live.oracle import LiveDiffusionOracle, LiveOracleError, LiveOracleOptions
from quality_oracle.live.sampler import ClusterPlan, Guidance, HISSampler, UserPlan

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("live_models")
    pipe = lf.tiny_sd3_pipeline()
    pipe.save_pretrained(root / "sd3")
    lf.save_tiny_clip(root / "clip")
    return root


def _options(models, tmp_path, **kw):
    base = {"es_model": str(models / "sd3"), "clip_model": str(models / "clip"), "device": "cpu",
            "dtype": "float32", "height": 32, "width": 32, "batch_size": 3, "max_sequence_length": 32,
            "cache_dir": str(tmp_path / "cache")}
    return {**base, **kw}


def _request(sim_npi=True, ecdiff=None, negatives=None, seed=0):
    personal = ["a grey cat on a sofa", "a black cat", "a brown dog in a park", "a small dog"]
    return QualityRequest(
        common_steps=np.array([2, 0, 1, 3]), es_personal_steps=np.array([1, 2, 2, 0]),
        ue_steps=np.array([1, 2, 1, 1]), similarity=np.array([0.6, 0.5, 0.7, 0.4]),
        cluster=np.array([0, 0, 1, 1]), sim_npi=sim_npi, approximated_es_steps=np.zeros(4, dtype=int),
        personal_prompts=personal, public_prompts=["a cat at home", "a dog outside"],
        negative_prompts=negatives or ["a white cat", "a grey cat", "a black dog", "a big dog"],
        ecdiff=ecdiff, seed=seed)


def _independent_clip(models, images, prompts):
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(models / "clip").eval()
    tok = AutoTokenizer.from_pretrained(models / "clip")
    scorer = CLIPScorer(model, tok)  # only for its preprocessing, checked separately below
    tokens = tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                    pixel_values=scorer.preprocess(images))
        return (torch.diagonal(out.logits_per_image) / model.logit_scale.exp()).numpy()


def test_scores_are_clip_of_his_images(models, tmp_path):
    oracle = LiveDiffusionOracle(_options(models, tmp_path))
    assert isinstance(oracle, QualityOracle) and oracle.needs_prompts
    request = _request()
    scores = oracle.evaluate(request)
    assert scores.shape == (4,) and np.isfinite(scores).all()

    # the same generations by hand: one cluster at a time, cluster seeds as the oracle derives them
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(models / "sd3")
    sampler = HISSampler(pipe, height=32, width=32, max_sequence_length=32)
    for m, idx in ((0, [0, 1]), (1, [2, 3])):
        users = tuple(UserPlan(request.personal_prompts[n], request.negative_prompts[n],
                               int(request.common_steps[n]), int(request.es_personal_steps[n]),
                               int(request.ue_steps[n])) for n in idx)
        images, _ = sampler.generate([ClusterPlan(request.public_prompts[m], users,
                                                  seed=oracle_module.cluster_seed(0, m))],
                                     guidance=Guidance(2.0, 8.0))
        expected = _independent_clip(models, images[0], [request.personal_prompts[n] for n in idx])
        np.testing.assert_allclose(scores[idx], expected, atol=1e-5)


def test_cache_hit_needs_no_model(models, tmp_path, monkeypatch):
    first = LiveDiffusionOracle(_options(models, tmp_path)).evaluate(_request())

    def no_model(*args, **kwargs):
        raise AssertionError("a cache hit must not load a model")

    monkeypatch.setattr(oracle_module, "load_pipeline", no_model)
    monkeypatch.setattr(oracle_module, "load_clip", no_model)
    again = LiveDiffusionOracle(_options(models, tmp_path))
    np.testing.assert_array_equal(again.evaluate(_request()), first)
    assert again.generated == 0
    with pytest.raises(AssertionError, match="must not load"):  # a miss does load
        again.evaluate(_request(seed=1))


def test_sim_npi_off_means_w1_equals_w2_and_no_negative(models, tmp_path):
    off = LiveDiffusionOracle(_options(models, tmp_path, cache=False))
    s_off = off.evaluate(_request(sim_npi=False))
    s_off2 = off.evaluate(_request(sim_npi=False, negatives=["x", "y", "z", "w"]))
    np.testing.assert_array_equal(s_off, s_off2)  # negatives unused
    on_same = LiveDiffusionOracle(_options(models, tmp_path, cache=False, guidance_common=8.0))
    np.testing.assert_allclose(on_same.evaluate(_request(negatives=["", "", "", ""])), s_off, atol=1e-6)
    assert not np.allclose(off.evaluate(_request(sim_npi=True)), s_off)


def test_ecdiff_request_runs_and_changes_scores(models, tmp_path):
    oracle = LiveDiffusionOracle(_options(models, tmp_path, cache=False))
    base = _request()
    base.common_steps, base.es_personal_steps, base.ue_steps = (np.array([5, 0, 4, 6]), np.array([2, 6, 3, 1]),
                                                                np.array([1, 2, 1, 1]))
    plain = oracle.evaluate(base)
    base.ecdiff = ECDiffSchedule(pre_inference_calls=2, approx_steps=2, smoothing=0.3, reinit_calls=2)
    approx = oracle.evaluate(base)
    assert np.isfinite(approx).all() and not np.allclose(plain, approx)


def test_clip_preprocessing_matches_clip_image_processor(models):
    from PIL import Image
    from transformers import CLIPImageProcessor

    scorer = CLIPScorer.from_pretrained(str(models / "clip"), device="cpu")
    processor = CLIPImageProcessor.from_pretrained(models / "clip")
    g = torch.Generator().manual_seed(0)
    for size, tol in ((16, 1e-6), (48, 0.03)):  # native size exact; resizing: PIL rounds to uint8
        images = torch.randint(0, 256, (2, 3, size, size), generator=g).float() / 255
        pil = [Image.fromarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for im in images]
        ref = processor(images=pil, return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(scorer.preprocess(images), ref, atol=tol, rtol=0)


# ----------------------------------------------------------------------------- options and errors


def test_unknown_option_names_key_and_allowed(models, tmp_path):
    with pytest.raises(LiveOracleError, match="unknown oracle.live option 'guidance'.*allowed keys: es_model"):
        LiveDiffusionOracle(_options(models, tmp_path, guidance=3.0))


@pytest.mark.parametrize("change, message", [
    ({"es_model": ""}, "oracle.live.es_model is required"),
    ({"clip_model": None}, "oracle.live.clip_model is required"),
    ({"dtype": "fp8"}, "dtype must be one of bfloat16, float16, float32"),
    ({"device": "tpu"}, "device must be"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"guidance_personal": "high"}, "guidance_personal must be a number"),
    ({"cache": "yes"}, "cache must be true or false"),
])
def test_bad_option_values(models, tmp_path, change, message):
    with pytest.raises(LiveOracleError, match=message):
        LiveOracleOptions.from_mapping(_options(models, tmp_path, **change))


def test_no_cuda_message(models, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LiveOracleError) as err:
        LiveDiffusionOracle(_options(models, tmp_path, device="cuda"))
    assert str(err.value) == "CUDA is not available; set oracle.live.device: cpu to run (slowly) on the CPU"


def test_model_path_errors(models, tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    expected = f"es_model: path '{missing}' does not exist; expected a diffusers pipeline folder"
    with pytest.raises(LiveOracleError, match=expected):
        LiveDiffusionOracle(_options(models, tmp_path, es_model=str(missing)))
    with pytest.raises(LiveOracleError, match="clip_model: .* has no config.json; expected a transformers CLIPModel"):
        LiveDiffusionOracle(_options(models, tmp_path, clip_model=str(tmp_path)))
    single = tmp_path / "sd3.safetensors"
    single.write_bytes(b"")
    with pytest.raises(LiveOracleError, match="is a file.*single-file checkpoints are not supported"):
        LiveDiffusionOracle(_options(models, tmp_path, ue_model=str(single)))
    other = tmp_path / "flux"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(LiveOracleError, match="unsupported pipeline type 'FluxPipeline'"):
        LiveDiffusionOracle(_options(models, tmp_path, es_model=str(other)))


def test_missing_prompts_are_reported(models, tmp_path):
    oracle = LiveDiffusionOracle(_options(models, tmp_path))
    request = _request()
    request.personal_prompts = []
    with pytest.raises(ValueError, match="one personal prompt per UE"):
        oracle.evaluate(request)


def test_cache_key_is_per_user_and_exact(models, tmp_path):
    """A user's cached score equals a fresh generation when its cluster mates change."""
    cached = LiveDiffusionOracle(_options(models, tmp_path))
    cached.evaluate(_request())
    changed = _request()
    changed.common_steps = np.array([2, 1, 1, 3])  # user 1 changes; cluster 0's largest x stays 2
    changed.es_personal_steps = np.array([1, 1, 2, 0])
    before = cached.generated
    scores = cached.evaluate(changed)
    assert cached.generated == before + 1  # only user 1 was generated
    fresh = LiveDiffusionOracle(_options(models, tmp_path, cache=False)).evaluate(changed)
    np.testing.assert_allclose(scores, fresh, atol=1e-6)


def test_default_cache_folder_follows_his_marl_cache(models, tmp_path, monkeypatch):
    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path / "shared"))
    options = _options(models, tmp_path)
    del options["cache_dir"]
    oracle = LiveDiffusionOracle(options)
    assert oracle.cache.path == tmp_path / "shared" / "live_oracle" / "live_scores.sqlite"
