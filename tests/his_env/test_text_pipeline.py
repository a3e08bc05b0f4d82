"""The env's text pipeline end to end: the clustering and public-prompt source are picked by name,
phi (Eq. 5) is the similarity of each personal prompt to its cluster's public prompt, and IIS,
which has no public prompt, observes and requests phi = 1."""
from __future__ import annotations

import numpy as np
import pytest

import his_env
from his_env.text import PUBLIC_PROMPT_SOURCES, PublicPromptSource
from his_env.text.public import NoPublicPrompt, RandomMemberPrompt

pytest.importorskip("sentence_transformers")


class RecordingOracle:
    """The fitted HIQM, remembering every request it answers."""

    needs_prompts = True

    def __init__(self):
        from quality_oracle.hiqm import HIQMOracle
        self.inner = HIQMOracle.from_csv()
        self.requests = []

    def evaluate(self, request):
        self.requests.append(request)
        return self.inner.evaluate(request)


def make_env(scheme: str, oracle=None, **overrides):
    return his_env.parallel_env(num_ues=12, num_clusters=3, scheme__name=scheme, oracle=oracle,
                                **overrides)


def step_once(env, seed):
    env.reset(seed=seed)
    actions = {a: np.array([4, 2]) for a in env.agents}
    return env.step(actions)


def test_sources_registered_under_the_config_names():
    assert set(PUBLIC_PROMPT_SOURCES.names) == {"generated", "llm", "random_member", "none"}
    for name in PUBLIC_PROMPT_SOURCES:
        assert issubclass(PUBLIC_PROMPT_SOURCES[name], PublicPromptSource)
    with pytest.raises(KeyError, match="allowed: random_member, none, generated, llm"):
        PUBLIC_PROMPT_SOURCES["summary"]


def test_iis_observes_and_requests_similarity_one_without_a_public_prompt():
    oracle = RecordingOracle()
    env = make_env("iis", oracle=oracle)
    assert isinstance(env.public_prompt_source, NoPublicPrompt)
    for seed in range(3):
        observations, *_ = step_once(env, seed)
        assert env.current_prompts()["public"] == [""] * env._point.num_clusters
        np.testing.assert_array_equal(oracle.requests[-1].similarity, 1.0)
        np.testing.assert_array_equal(oracle.requests[-1].common_steps, 0)
        assert oracle.requests[-1].public_prompts == [""] * env._point.num_clusters
    assert all(obs[0] == 1.0 for obs in observations.values())  # phi is observation entry 0


def test_iis_quality_equals_independent_inference_at_x_zero():
    """With x = 0 every step uses the personal prompt: the fitted HIQM at x = 0, phi = 1."""
    oracle = RecordingOracle()
    env = make_env("iis", oracle=oracle)
    _, _, _, _, infos = step_once(env, 0)
    expected = oracle.inner.quality(np.zeros(12), np.ones(12), False)
    np.testing.assert_allclose([infos[a]["quality"] for a in env.possible_agents], expected)


def test_random_member_phi_is_the_similarity_to_a_member_of_the_cluster():
    env = make_env("ppgfis")
    assert isinstance(env.public_prompt_source, RandomMemberPrompt)
    for seed in range(5):
        env.reset(seed=seed)
        texts = env.current_prompts()
        public_index = [env.pool.texts.index(t) for t in texts["public"]]
        labels = env._point.cluster
        for m, index in enumerate(public_index):
            assert index in env._prompt_index[labels == m]  # a member's prompt
        vectors = env.pool_embeddings
        expected = np.einsum("nd,nd->n", vectors[env._prompt_index], vectors[public_index][labels])
        np.testing.assert_allclose(env._phi, expected, atol=1e-6)


def test_generated_phi_is_the_similarity_to_the_embedded_public_prompt():
    env = make_env("his")
    for seed in range(5):
        env.reset(seed=seed)
        texts = env.current_prompts()
        public = env.embedder.embed(texts["public"])
        personal = env.embedder.embed(texts["personal"])
        expected = np.einsum("nd,nd->n", personal, public[env._point.cluster])
        np.testing.assert_allclose(env._phi, expected, atol=1e-6)
        for m, text in enumerate(texts["public"]):  # the generator's own sentence per cluster
            members = env._prompt_index[env._point.cluster == m]
            assert text == env.public_prompt_source.generate_for(members)


def test_clustering_is_picked_by_name():
    env = make_env("his", scheme__clustering="entity")
    for seed in range(3):
        env.reset(seed=seed)
        entities = np.asarray(env.pool.entity)[env._prompt_index]
        for m in range(env._point.num_clusters):  # 3 intent groups, 3 clusters: one entity each
            assert len(set(entities[env._point.cluster == m])) == 1
