"""HIS: the Hybrid Inference Scheme of diffusion AIGC services in an MEC network, as a PettingZoo env.

One edge server (ES) and N user equipments (UEs) generate images with a diffusion model. At each
decision point every UE brings a new personal prompt; the ES clusters the UEs by prompt meaning
(Alg. 1), writes a public prompt per cluster, runs a shared *common* denoising phase per cluster,
then a *personalised* phase per UE on the ES, and hands the latent to the UE, which finishes the
image. Each UE is an agent that chooses how many common steps x and ES-personalised steps y it
takes; the UE runs the remaining z = T_max - x - y steps. The ES splits its GPU SMs across
clusters by Theorem 1. The reward trades image quality (HIQM, Eq. 7) against delay and energy
(Eqs. 8-23, 33); the sum of all rewards is the network utility U.

    import his_env
    env = his_env.parallel_env()                       # the paper's Table II, N = 50
    env = his_env.parallel_env("configs/small.yaml", num_ues=4, scheme__name="cfis")
    observations, infos = env.reset(seed=0)
    actions = {agent: env.action_space(agent).sample() for agent in env.agents}
    observations, rewards, terminations, truncations, infos = env.step(actions)

| | |
|---|---|
| Agents | `ue_0` ... `ue_{N-1}` (N = `num_ues`, 50 by default), all acting at every step |
| Observation (Eq. 31) | `Box(3,)` float32: public-personal similarity phi in [-1, 1]; the ES SM budget and the UE's SMs, each min-max normalised by `observation.*_sm_reference` (Table II ranges: [0, 1]) |
| Action (Eq. 32) | `MultiDiscrete([x_max + 1, y_max - y_min + 1])`: common steps x = a[0] in {0..x_max}, ES personalised steps y = y_min + a[1] in {y_min..y_max}; z = T_max - x - y |
| Reward (Eq. 33) | w_q Q_n - w_t T_n - w_e (E_n + the UE's share of its cluster's ES energy); sum over UEs = U (Eq. 23) |
| Episode | `episode_length` decision points (20); ends by truncation, never by termination |
| Seeding | `reset(seed=s)` makes the whole episode reproducible |

Actions that leave z below `steps.min_ue` are projected: y is lowered first (not below y_min),
then x; `infos[agent]["projected"]` says when that happened. Under the IIS scheme x is forced to 0,
and there is no public prompt: every step of a UE is conditioned on its own prompt, so its
observed phi, and the similarity its quality request carries, is 1 (the prompt's similarity to itself).
Every action is checked: a missing or unknown agent, a wrong shape, a non-integer dtype or a value
out of range raises `ValueError` naming the agent, the value and what is allowed.

`infos[agent]` after a step holds the decision just executed: `quality`, `delay`, `energy` (Q_n,
T_n, E_n with the ES share of Eq. 33), `cluster`, `similarity`, `common_steps`, `es_personal_steps`,
`ue_steps`, `projected`, `es_sms` (SMs of its cluster), `ue_sms`, `es_sm_budget`, `distance_m`,
`rate_bps`, and `raw_observation` (unnormalised phi, ES SM budget, UE SMs of the returned
observation). `infos[agent]["network"]` is one dict shared by all agents: `utility`, `quality`,
`delay`, `energy` (U, Q, T, E of Eqs. 21-23), `scheme`, `num_clusters`, `intra_cluster_similarity`,
`public_personal_similarity`, and per-cluster lists (`cluster_sizes`, `cluster_es_sms`,
`cluster_max_common_steps`, `cluster_similarity`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from his_env import channel, clustering, schemes, system_model
from his_env.config import HISConfig
from his_env.semantics import SentenceEmbedder
from his_env.text import PUBLIC_PROMPT_SOURCES, PublicPromptSource
from his_env.text.negative import negative_prompt
from his_env.workload import Workload, build_pool
from quality_oracle import build_oracle
from quality_oracle.base import ECDiffSchedule, QualityOracle, QualityRequest

_RNG_STREAMS = ("workload", "clustering", "public_prompt", "resources", "channel")
_POOL_SIMILARITY_LIMIT = 2048  # pools up to this size keep their P x P similarities (16 MiB at most)


def load_config(config: HISConfig | dict | str | Path | None = None, **overrides: Any) -> HISConfig:
    """A validated `HISConfig` from a config object, a dict, a YAML path or None (defaults)."""
    if config is None:
        cfg = HISConfig.from_dict({})
    elif isinstance(config, HISConfig):
        cfg = config
    elif isinstance(config, dict):
        cfg = HISConfig.from_dict(config)
    elif isinstance(config, (str, Path)):
        cfg = HISConfig.from_yaml(config)
    else:
        raise TypeError(f"config must be an HISConfig, a dict, a YAML path or None, got {type(config).__name__}")
    return cfg.with_overrides(overrides) if overrides else cfg


class HISParallelEnv(ParallelEnv):
    metadata = {"name": "his_v0", "render_modes": ["ansi"], "is_parallelizable": True}

    def __init__(self, config: HISConfig | dict | str | Path | None = None, render_mode: str | None = None,
                 oracle: QualityOracle | None = None, **overrides: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}; allowed: None or 'ansi'")
        self.render_mode = render_mode
        self.config = cfg = load_config(config, **overrides)
        self.scheme = schemes.resolve(cfg.scheme)
        self.num_ues = cfg.num_ues
        self.num_clusters = 1 if self.scheme.clustering == "single" else cfg.num_clusters
        self.possible_agents = [f"ue_{n}" for n in range(cfg.num_ues)]
        self.agents: list[str] = []
        self._agent_index = {agent: n for n, agent in enumerate(self.possible_agents)}

        steps = cfg.steps
        self._action_nvec = np.array([steps.max_common + 1, steps.max_es_personal - steps.min_es_personal + 1])
        self._action_space = spaces.MultiDiscrete(self._action_nvec)
        es_ref, ue_ref = cfg.observation.es_sm_reference, cfg.observation.ue_sm_reference
        self._obs_offset = np.array([0.0, es_ref[0], ue_ref[0]])
        self._obs_scale = np.array([1.0, es_ref[1] - es_ref[0], ue_ref[1] - ue_ref[0]])
        raw_low = np.array([-1.0, cfg.es.sm_range[0], cfg.ue.sm_range[0]])
        raw_high = np.array([1.0, cfg.es.sm_range[1], cfg.ue.sm_range[1]])
        self._observation_space = spaces.Box(self._normalise(raw_low), self._normalise(raw_high), dtype=np.float32)
        self.state_space = spaces.Box(np.tile(self._observation_space.low, cfg.num_ues),
                                      np.tile(self._observation_space.high, cfg.num_ues), dtype=np.float32)

        # Text pipeline: prompt pool and its embeddings are computed once (and cached on disk).
        self.pool = build_pool(cfg.workload.source, cfg.workload.path, cfg.workload.pool_size, 0,
                               cfg.workload.subjects)
        self.workload = Workload(self.pool, cfg.workload.num_intent_groups)
        self.embedder = SentenceEmbedder(cfg.semantics.model, cfg.semantics.cache_dir)
        self.pool_embeddings = self.embedder.embed(self.pool.texts)
        self._pool_entities = np.asarray(self.pool.entity)
        self._pool_similarity = (self.pool_embeddings @ self.pool_embeddings.T
                                 if len(self.pool) <= _POOL_SIMILARITY_LIMIT else None)
        self._cluster = clustering.CLUSTERING_METHODS[self.scheme.clustering]
        self.public_prompt_source = self._build_public_prompt_source()

        self.oracle = oracle if oracle is not None else build_oracle(cfg.oracle, cfg.ecdiff)
        e = cfg.ecdiff
        self._ecdiff = ECDiffSchedule(e.pre_inference_calls, e.approx_steps, e.smoothing,
                                      e.reinit_calls) if e.enabled else None
        self._latent_bits = channel.latent_bits(cfg.channel)
        self._rngs: dict[str, np.random.Generator] | None = None
        self._episode_seed = 0
        self._step_count = 0
        self._point: system_model.DecisionPoint | None = None
        self._last: dict[str, Any] | None = None

    # ------------------------------------------------------------------ PettingZoo API
    def observation_space(self, agent: str) -> spaces.Box:
        return self._observation_space

    def action_space(self, agent: str) -> spaces.MultiDiscrete:
        return self._action_space

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None or self._rngs is None:
            sequence = np.random.SeedSequence(seed)
            self._episode_seed = int(sequence.generate_state(1)[0])
            self._rngs = {name: np.random.default_rng(child)
                          for name, child in zip(_RNG_STREAMS, sequence.spawn(len(_RNG_STREAMS)))}
        self.agents = list(self.possible_agents)
        self._step_count = 0
        self._last = None
        self._new_decision_point()
        observations = self._observations()
        raw = self._raw_observation_lists()
        network = self._decision_point_summary()
        infos = {agent: {"cluster": c, "raw_observation": r, "network": network}
                 for agent, c, r in zip(self.agents, self._point.cluster.tolist(), raw)}
        return observations, infos

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        common, personal, ue, projected = self._apply_action_rules(self._parse_actions(actions))
        result = self._evaluate(common, personal, ue, for_step=True)

        point, phi = self._point, self._phi
        network = {
            "utility": float(result["utility"]), "quality": float(result["total_quality"]),
            "delay": float(result["total_delay"]), "energy": float(result["total_energy"]),
            **self._decision_point_summary(),
            "cluster_es_sms": result["es_sms"].tolist(),
            "cluster_max_common_steps": system_model.cluster_max(common, point).tolist(),
        }
        per_agent = zip(result["quality"].tolist(), result["delay"].tolist(), result["energy"].tolist(),
                        point.cluster.tolist(), phi.tolist(), common.tolist(), personal.tolist(), ue.tolist(),
                        projected.tolist(), result["es_sms"][point.cluster].tolist(), point.ue_sms.tolist(),
                        self._distance.tolist(), point.downlink_rate.tolist())
        keys = ("quality", "delay", "energy", "cluster", "similarity", "common_steps", "es_personal_steps",
                "ue_steps", "projected", "es_sms", "ue_sms", "distance_m", "rate_bps")
        infos = {agent: dict(zip(keys, values)) for agent, values in zip(self.agents, per_agent)}
        budget = int(point.es_sm_budget)
        rewards = dict(zip(self.agents, result["reward"].tolist()))
        self._last = {"common": common, "personal": personal, "ue": ue, "result": result, "network": network}

        self._step_count += 1
        done = self._step_count >= self.config.episode_length
        self._new_decision_point()  # the next decision point: also observed at truncation (bootstrap)
        observations = self._observations()
        for agent, raw in zip(self.agents, self._raw_observation_lists()):
            infos[agent]["es_sm_budget"] = budget
            infos[agent]["raw_observation"] = raw
            infos[agent]["network"] = network
        terminations = dict.fromkeys(self.agents, False)
        truncations = dict.fromkeys(self.agents, done)
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def render(self) -> str | None:
        if self.render_mode is None:
            return None
        return self._render_text()

    def close(self) -> None:
        pass

    def state(self) -> np.ndarray:
        """The global state: all UEs' observations, concatenated (for centralised critics)."""
        return self._observation_matrix.reshape(-1).copy()

    # ------------------------------------------------------------------ for planners and tools
    def evaluate_joint_actions(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Utility of B candidate joint actions (B, N, 2) at the current decision point, without stepping.

        Uses the same rules as `step` (projection, IIS, allocation, EC-Diff). Returns "utility" (B,),
        "rewards" (B, N), "quality", "delay", "energy" (B,) network totals.
        """
        if self._point is None:
            raise RuntimeError("call reset() before evaluate_joint_actions()")
        if self.oracle.needs_prompts:
            raise RuntimeError("evaluate_joint_actions needs the fitted oracle: a live oracle would run "
                               "diffusion for every candidate")
        actions = np.asarray(actions)
        if actions.ndim != 3 or actions.shape[1:] != (self.num_ues, 2):
            raise ValueError(f"actions of shape {actions.shape}; allowed: (B, {self.num_ues}, 2)")
        self._check_action_values(actions.reshape(-1, 2), None)
        common, personal, ue, _ = self._apply_action_rules(actions.astype(np.int64))
        result = self._evaluate(common, personal, ue, for_step=False)
        return {"utility": result["utility"], "rewards": result["reward"], "quality": result["total_quality"],
                "delay": result["total_delay"], "energy": result["total_energy"]}

    def decode_actions(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, z) that `step` would apply to an (..., N, 2) array of actions."""
        common, personal, ue, _ = self._apply_action_rules(np.asarray(actions, dtype=np.int64))
        return common, personal, ue

    def current_prompts(self) -> dict[str, Any]:
        """Texts of the current decision point: personal, public (per cluster), NPI negatives, clusters."""
        personal = [self.pool.texts[i] for i in self._prompt_index]
        return {"personal": personal, "public": list(self._public_texts),
                "negative": [negative_prompt(p) for p in personal], "cluster": self._point.cluster.tolist()}

    # ------------------------------------------------------------------ internals
    def _normalise(self, raw: np.ndarray) -> np.ndarray:
        return ((raw - self._obs_offset) / self._obs_scale).astype(np.float32)

    def _new_decision_point(self) -> None:
        """Workload -> semantics -> clustering -> public prompts -> similarities -> resources (Alg. 2, l. 4-6)."""
        rng = self._rngs
        cfg, n = self.config, self.num_ues
        index = self.workload.sample(n, rng["workload"])
        prompts = clustering.DecisionPrompts(index, self.pool_embeddings, self._pool_entities,
                                             self._pool_similarity)
        labels = self._cluster(prompts, self.num_clusters, rng["clustering"])
        num_clusters = int(labels.max()) + 1
        embeddings = self.pool_embeddings[index]
        public_texts, phi = self._public_prompts(index, embeddings, labels, num_clusters)

        es = cfg.es.sm_range
        budget = int(rng["resources"].integers(es[0], es[1] + 1))
        ue_sms = rng["resources"].integers(cfg.ue.sm_range[0], cfg.ue.sm_range[1] + 1, size=n)
        distance = channel.sample_distances(rng["channel"], n, cfg.channel.distance_range_m)
        rate = channel.downlink_rate(channel.channel_gain(rng["channel"], distance, cfg.channel), cfg.channel)

        self._prompt_index, self._prompt_embeddings, self._phi = index, embeddings, phi
        self._public_texts, self._distance = public_texts, distance
        self._point = system_model.DecisionPoint(labels, num_clusters, budget, ue_sms, rate)
        self._summary = None  # computed on first use
        raw = np.column_stack([np.clip(phi, -1.0, 1.0), np.full(n, float(budget)), ue_sms.astype(float)])
        self._raw_observation = raw
        self._observation_matrix = self._normalise(raw)

    def _build_public_prompt_source(self) -> PublicPromptSource:
        """The scheme's public-prompt source; `none` wherever there is no common phase (IIS)."""
        name = self.scheme.public_prompt
        if not self.scheme.common_phase:
            name = "none"
        elif name == "none":
            raise ValueError("scheme.public_prompt='none' needs scheme.common_phase=false: the common "
                             "phase denoises the public prompt; allowed with a common phase: "
                             f"{[k for k in PUBLIC_PROMPT_SOURCES.names if k != 'none']}")
        return PUBLIC_PROMPT_SOURCES[name].from_config(self.pool, self.config.prompts)

    def _public_prompts(self, index: np.ndarray, embeddings: np.ndarray, labels: np.ndarray,
                        num_clusters: int) -> tuple[list[str], np.ndarray]:
        """A public prompt per cluster (Sec. IV-B) and phi_{n,m(n)} of every UE (Eq. 5)."""
        order = np.argsort(labels, kind="stable")
        clusters = np.split(index[order], np.cumsum(np.bincount(labels, minlength=num_clusters))[:-1])
        source = self.public_prompt_source
        texts = source.cluster_prompts(clusters, self._rngs["public_prompt"])
        if not source.writes_public_prompt:
            # No public prompt: every step of a UE is conditioned on its own prompt, phi = cos(p, p).
            return texts, np.ones(len(index), dtype=embeddings.dtype)
        public_embeddings = self.embedder.embed(texts)  # new texts: one model call for all
        return texts, np.einsum("nd,nd->n", embeddings, public_embeddings[labels])  # Eq. (5)

    def _observations(self) -> dict[str, np.ndarray]:
        return dict(zip(self.agents, self._observation_matrix))

    def _raw_observation_lists(self) -> list[list[float]]:
        return self._raw_observation.tolist()

    def _decision_point_summary(self) -> dict[str, Any]:
        if self._summary is None:
            self._summary = self._summarise_decision_point()
        return self._summary

    def _summarise_decision_point(self) -> dict[str, Any]:
        point, phi = self._point, self._phi
        sizes = point.cluster_sizes
        cluster_phi = (phi @ point.membership) / sizes
        return {
            "scheme": self.scheme.name, "num_clusters": point.num_clusters,
            "cluster_sizes": sizes.astype(int).tolist(), "cluster_similarity": cluster_phi.tolist(),
            "public_personal_similarity": float(cluster_phi.mean()),
            "intra_cluster_similarity": clustering.intra_cluster_similarity_of_embeddings(self._prompt_embeddings,
                                                                                           point.cluster),
            "es_sm_budget": int(point.es_sm_budget),
        }

    def _parse_actions(self, actions: dict[str, Any]) -> np.ndarray:
        if not isinstance(actions, dict):
            raise ValueError(f"actions must be a dict agent -> action, got {type(actions).__name__}")
        if len(actions) != len(self.agents) or actions.keys() != set(self.agents):
            unknown = sorted(set(actions) - set(self.agents))
            missing = sorted(set(self.agents) - set(actions))
            raise ValueError(f"actions must name every live agent once: unknown agents {unknown[:5]}, "
                             f"missing agents {missing[:5]} (live agents: ue_0..ue_{self.num_ues - 1})")
        try:
            stacked = np.array([actions[agent] for agent in self.agents])
        except ValueError:
            stacked = None
        if stacked is None or stacked.shape != (self.num_ues, 2):
            bad = next(a for a in self.agents if np.shape(actions[a]) != (2,))
            raise ValueError(f"action of {bad} is {actions[bad]!r} of shape {np.shape(actions[bad])}; allowed: "
                             f"shape (2,): (common steps, ES personalised steps - y_min)")
        self._check_action_values(stacked, self.agents)
        return stacked.astype(np.int64)

    def _check_action_values(self, stacked: np.ndarray, agents: list[str] | None) -> None:
        if stacked.dtype.kind not in "iu":
            if stacked.dtype.kind == "f" and np.all(np.isfinite(stacked)) and np.all(stacked == np.round(stacked)):
                pass  # whole numbers stored as floats (e.g. from a continuous wrapper) are accepted
            else:
                row = int(np.argmax(~np.all(stacked == np.round(stacked), axis=1))) if stacked.dtype.kind == "f" else 0
                who = agents[row] if agents else f"row {row}"
                raise ValueError(f"action of {who} is {stacked[row].tolist()!r} with dtype {stacked.dtype}; "
                                 f"allowed: integers")
        bad = (stacked < 0) | (stacked >= self._action_nvec)
        if bad.any():
            row = int(np.argmax(bad.any(axis=1)))
            who = agents[row] if agents else f"row {row}"
            raise ValueError(f"action of {who} is {stacked[row].tolist()}; allowed: a[0] (common steps) in "
                             f"0..{self._action_nvec[0] - 1}, a[1] (ES personalised steps - y_min) in "
                             f"0..{self._action_nvec[1] - 1}")

    def _apply_action_rules(self, actions: np.ndarray):
        """(x, y, z, projected) from actions (..., N, 2): IIS rule and the z >= z_min projection."""
        s = self.config.steps
        common = actions[..., 0].copy()
        personal = s.min_es_personal + actions[..., 1]
        if not self.scheme.common_phase:
            common[...] = 0  # IIS: no common phase
        overflow = np.maximum(common + personal - (s.total - s.min_ue), 0)
        cut_personal = np.minimum(overflow, personal - s.min_es_personal)
        personal = personal - cut_personal
        common = common - (overflow - cut_personal)
        ue = s.total - common - personal
        return common, personal, ue, overflow > 0

    def _evaluate(self, common, personal, ue, for_step: bool) -> dict[str, np.ndarray]:
        point = self._point
        work = system_model.es_work(self.config, point, common, personal, self._ecdiff is not None)
        request = QualityRequest(
            common_steps=common, es_personal_steps=personal, ue_steps=ue, similarity=self._phi,
            cluster=point.cluster, sim_npi=self.scheme.sim_npi, approximated_es_steps=work.approximated_steps,
            ecdiff=self._ecdiff, seed=self._episode_seed + self._step_count)
        if for_step and self.oracle.needs_prompts:
            personal_texts = [self.pool.texts[i] for i in self._prompt_index]
            request.personal_prompts = personal_texts
            request.public_prompts = list(self._public_texts)
            use_npi = self.scheme.sim_npi and self.config.prompts.negative == "wordnet"
            request.negative_prompts = [negative_prompt(p) if use_npi else "" for p in personal_texts]
        quality = np.asarray(self.oracle.evaluate(request), dtype=float)
        return system_model.evaluate(self.config, point, common, personal, ue, work, quality, self.scheme.allocation)

    def _render_text(self) -> str:
        point = self._point
        lines = [f"HIS env | scheme {self.scheme.name} | decision point {self._step_count}/"
                 f"{self.config.episode_length} | N={self.num_ues} M={point.num_clusters} "
                 f"ES SMs={point.es_sm_budget}"]
        sizes = point.cluster_sizes.astype(int)
        phi_m = (self._phi @ point.membership) / point.cluster_sizes
        for m in range(point.num_clusters):
            lines.append(f"  cluster {m}: {sizes[m]:3d} UEs, mean phi {phi_m[m]:.3f}, public: "
                         f"{self._public_texts[m][:70]!r}")
        if self._last is not None:
            net = self._last["network"]
            lines.append(f"  last step: U={net['utility']:.3f} Q={net['quality']:.3f} T={net['delay']:.2f}s "
                         f"E={net['energy']:.0f}J, SMs per cluster {net['cluster_es_sms']}")
        return "\n".join(lines)
