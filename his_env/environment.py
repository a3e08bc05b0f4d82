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
    env = his_env.parallel_env("configs/default.yaml", num_ues=4, scheme__name="cfis", max_cycles=5)
    observations, infos = env.reset(seed=0)            # also seeds every action space
    actions = {agent: env.action_space(agent).sample() for agent in env.agents}
    observations, rewards, terminations, truncations, infos = env.step(actions)

| | |
|---|---|
| Agents | `ue_0` ... `ue_{N-1}` (N = `num_ues`, 50 by default), all acting at every step |
| Observation (Eq. 31) | `Box(3,)` float32: public-personal similarity phi in [-1, 1]; the ES SM budget and the UE's SMs, each min-max normalised by `observation.*_sm_reference` (Table II ranges: [0, 1]) |
| Action (Eq. 32) | `MultiDiscrete([x_max + 1, y_max - y_min + 1])`: common steps x = a[0] in {0..x_max}, ES personalised steps y = y_min + a[1] in {y_min..y_max}; z = T_max - x - y |
| Reward (Eq. 33) | w_q Q_n - w_t T_n - w_e (E_n + the UE's share of its cluster's ES energy E_m); sum over UEs = U (Eq. 23) |
| Episode | `max_cycles` decision points (the config's `episode_length`, 20); ends by truncation, never by termination |
| Seeding | `reset(seed=s)` makes the whole episode, and `action_space(agent).sample()`, reproducible |

`observation_spaces` and `action_spaces` are dicts agent -> space; `state()` (with `state_space`)
is all observations concatenated. `state()`, `render()`, `current_prompts()`, `decision_context()`
and `network_summary()` describe a decision point and raise `RuntimeError` before `reset()`.

Actions that leave z below `steps.min_ue` are projected: y is lowered first (not below y_min),
then x; `infos[agent]["projected"]` says when that happened. Under the IIS scheme x is forced to 0,
and there is no public prompt: every step of a UE is conditioned on its own prompt, so its
observed phi, and the similarity its quality request carries, is 1 (the prompt's similarity to itself).
Every action is checked: a missing or unknown agent, a wrong or ragged shape, a boolean, a
non-integer or non-finite value, or a value out of range raises `ValueError` naming the agent,
its value and what is allowed.

`infos[agent]` holds the same flat keys (`INFO_KEYS`) at reset and at every step, each a plain
Python number, so that any wrapper can stack them:

- the decision point the step executed (at reset: the one just drawn, which the next step
  executes): `cluster` m(n), `similarity` phi_{n,m(n)} (Eq. 5), `ue_sms`, `es_sm_budget`,
  `distance_m`, `downlink_rate_bps` (Eq. 15), `num_clusters`, `intra_cluster_similarity` and
  `public_personal_similarity` (the network-wide metrics of Figs. 8 and 14);
- what the step did: `common_steps` x, `es_personal_steps` y, `ue_steps` z (after the action
  rules), `projected`, `es_sms` (the SMs of the UE's cluster), `quality` Q_n, `delay` T_n
  (Eq. 19), `ue_energy` E_n (Eq. 20: transmission plus the UE's own denoising),
  `es_energy_share` (the UE's share of its cluster's ES energy E_m, split by common steps and
  personalised ES calls; the reward charges `ue_energy + es_energy_share`, Eq. 33), and the
  network totals `network_utility`, `network_quality`, `network_delay`, `network_energy`
  (U, Q, T, E of Eqs. 21-23). At reset nothing has been executed yet: these hold 0
  (`projected` False);
- the returned observation before normalisation: `raw_obs_similarity` (phi clipped to [-1, 1]),
  `raw_obs_es_sm_budget`, `raw_obs_ue_sms`.

**With dynamics** (any process of the config's `dynamics` section on; `his_env.dynamics`) the env
is a Markov game: a decision point is a slot of `dynamics.slot_s` seconds, and what the UEs do now
shapes later slots (queues, busy UEs and ES SMs, batteries). Only the UEs that start a request in a
slot are *active*; the others' actions have no effect and earn 0 (`system_model.active_only`). Then:

- each observation is `Box(10,)`: Eq. (31)'s three values (the ES budget being what is left for
  new phases, so its low bound is 0 with `dynamics.work` on), then the UE's own
  `his_env.dynamics.slot.OBSERVATION_FEATURES`: active (0/1), queue length / Q_max, head-of-line
  slack / deadline, battery / capacity, rate over the inner-radius rate, last delay / deadline, and
  the fraction of the ES's SMs that running phases hold. No UE sees another's queue or battery;
- `state()` is all observations, then each UE's service time left (slots) and the ES's available
  SMs over es.sm_range's high (`STATE_FEATURES`): N * 10 + N + 1 values;
- the reward also charges w_t T_slot per request per slot waited and `dynamics.requests.drop_penalty`
  per dropped request, to its UE (`dynamics_penalty`); UE steps a battery cannot pay are moved to
  the ES before Eqs. (8)-(23) (`battery_moved_steps`);
- infos also hold `DYNAMICS_INFO_KEYS`: of the executed decision point `active`, `queue_length`,
  `requests_arrived`, `requests_dropped`, `requests_waited`, `battery_j` (before the step's
  drain), `busy_slots`, `es_available_sms`, `es_held_sms`; of the step `battery_moved_steps`,
  `dynamics_penalty`, `battery_drained_j`. `dynamics_books()` returns the cumulative request and
  energy books since reset.

`network_summary()` returns the nested per-cluster view of the same decision point (scheme name,
cluster sizes, per-cluster similarity, SMs and x_m^max; U, Q, T, E after a step), and
`decision_context()` the current decision point as arrays (prompt indices, clusters, phi, SMs,
distances, rates) for tools that act on it.
"""
from __future__ import annotations

from dataclasses import replace
from itertools import repeat
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from his_env import channel, clustering, schemes, system_model
from his_common.config import load_yaml
from his_env.config import HISConfig
from his_env.dynamics import draws as dynamics_draws
from his_env.dynamics import intent as intent_process
from his_env.dynamics.slot import OBSERVATION_HIGH, OBSERVATION_LOW, SlotDynamics
from his_env.semantics import SentenceEmbedder
from his_env.text import PUBLIC_PROMPT_SOURCES, PublicPromptSource
from his_env.text.negative import negative_prompt
from his_env.workload import Workload, build_pool
from quality_oracle import build_oracle
from quality_oracle.base import ECDiffSchedule, QualityOracle, QualityRequest

_RNG_STREAMS = ("workload", "clustering", "public_prompt", "resources", "channel")
_DYNAMICS_STREAM = len(_RNG_STREAMS) + 1  # child of the seed's SeedSequence: after the streams and the spaces' one
_POOL_SIMILARITY_LIMIT = 2048  # pools up to this size keep their P x P similarities (16 MiB at most)

# Keys of infos[agent], the same at reset and at every step (see the module docstring).
DECISION_POINT_INFO_KEYS = ("cluster", "similarity", "ue_sms", "es_sm_budget", "distance_m", "downlink_rate_bps",
                            "num_clusters", "intra_cluster_similarity", "public_personal_similarity")
OUTCOME_INFO_KEYS = ("common_steps", "es_personal_steps", "ue_steps", "projected", "es_sms", "quality", "delay",
                     "ue_energy", "es_energy_share", "network_utility", "network_quality", "network_delay",
                     "network_energy")
OBSERVATION_INFO_KEYS = ("raw_obs_similarity", "raw_obs_es_sm_budget", "raw_obs_ue_sms")
INFO_KEYS = DECISION_POINT_INFO_KEYS + OUTCOME_INFO_KEYS + OBSERVATION_INFO_KEYS
# With any dynamics process on, infos also hold these (after INFO_KEYS; `env.info_keys` lists them all).
DYNAMICS_DECISION_POINT_INFO_KEYS = ("active", "queue_length", "requests_arrived", "requests_dropped",
                                     "requests_waited", "battery_j", "busy_slots", "es_available_sms", "es_held_sms")
DYNAMICS_OUTCOME_INFO_KEYS = ("battery_moved_steps", "dynamics_penalty", "battery_drained_j")
DYNAMICS_INFO_KEYS = DYNAMICS_DECISION_POINT_INFO_KEYS + DYNAMICS_OUTCOME_INFO_KEYS
# What the outcome keys hold at reset, before any decision has been executed.
_OUTCOME_AT_RESET = {"common_steps": 0, "es_personal_steps": 0, "ue_steps": 0, "projected": False, "es_sms": 0,
                     "quality": 0.0, "delay": 0.0, "ue_energy": 0.0, "es_energy_share": 0.0,
                     "network_utility": 0.0, "network_quality": 0.0, "network_delay": 0.0, "network_energy": 0.0,
                     "battery_moved_steps": 0, "dynamics_penalty": 0.0, "battery_drained_j": 0.0}


def dynamics_generator(seed: int | None = None, sequence: np.random.SeedSequence | None = None) -> np.random.Generator:
    """The generator of the dynamics' draws that `HISParallelEnv.reset(seed=seed)` starts (a child of
    the seed's SeedSequence of its own, so the env's other streams do not change with the dynamics)."""
    sequence = np.random.SeedSequence(seed) if sequence is None else sequence
    child = np.random.SeedSequence(sequence.entropy, spawn_key=tuple(sequence.spawn_key) + (_DYNAMICS_STREAM,),
                                   pool_size=sequence.pool_size)
    return np.random.default_rng(child)


def _holds_booleans(action: Any) -> bool:
    """Whether an action is or holds booleans (numpy would silently read them as 0/1)."""
    if isinstance(action, np.ndarray):
        return action.dtype.kind == "b"
    if isinstance(action, (list, tuple)):
        return any(_holds_booleans(part) for part in action)
    return isinstance(action, (bool, np.bool_))


def _check_max_cycles(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"max_cycles={value!r}; allowed: an integer >= 1 (decision points per episode; "
                         f"it overrides the config's episode_length)")
    return int(value)


def load_config(config: HISConfig | dict | str | Path | None = None, scenario: str | None = None,
                **overrides: Any) -> HISConfig:
    """A validated `HISConfig` from a config object, a dict, a YAML path or None (defaults); with
    `scenario` (a name of `his_env.scenarios.scenario_names()`), the scenario's overlay first, then
    `config` (a dict or a YAML path) over it, then `overrides`."""
    if scenario is not None:
        from his_env.scenarios import scenario_config

        if isinstance(config, HISConfig):
            raise ValueError(f"scenario={scenario!r} with a ready HISConfig; allowed: scenario with a dict, a "
                             f"YAML path or None as config (laid over the scenario), or the HISConfig alone")
        if config is not None and not isinstance(config, (dict, str, Path)):
            raise TypeError(f"config must be an HISConfig, a dict, a YAML path or None, got {type(config).__name__}")
        layer = config if isinstance(config, dict) else (load_yaml(config) if config is not None else {})
        return scenario_config(scenario, layer or {}, **overrides)
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
                 oracle: QualityOracle | None = None, max_cycles: int | None = None, scenario: str | None = None,
                 **overrides: Any):
        """`config`: an HISConfig, a dict, a YAML path or None (Table II); `scenario`: a named scenario
        (`his_env.scenarios`), laid under `config`; `overrides`: config keys (`num_ues=4`,
        `scheme__name="cfis"`); `max_cycles`: decision points per episode (overrides
        `episode_length`); `oracle`: a ready QualityOracle instead of the one the config names."""
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}; allowed: None or 'ansi'")
        if max_cycles is not None:
            overrides["episode_length"] = _check_max_cycles(max_cycles)
        self.render_mode = render_mode
        self.config = cfg = load_config(config, scenario, **overrides)
        self.scheme = schemes.resolve(cfg.scheme)
        self.num_ues = cfg.num_ues
        self.num_clusters = 1 if self.scheme.clustering == "single" else cfg.num_clusters
        self.possible_agents = [f"ue_{n}" for n in range(cfg.num_ues)]
        self.agents: list[str] = []
        self._agent_index = {agent: n for n, agent in enumerate(self.possible_agents)}

        steps = cfg.steps
        self._action_nvec = np.array([steps.max_common + 1, steps.max_es_personal - steps.min_es_personal + 1])
        self.action_spaces = {agent: spaces.MultiDiscrete(self._action_nvec) for agent in self.possible_agents}
        # the Markov-game dynamics (None: every decision point an independent draw, the paper's setting)
        self.dynamics = (SlotDynamics(cfg, self.num_clusters, self.scheme.common_phase)
                         if cfg.dynamics.enabled_processes else None)
        self.info_keys = INFO_KEYS + (DYNAMICS_INFO_KEYS if self.dynamics is not None else ())
        es_ref, ue_ref = cfg.observation.es_sm_reference, cfg.observation.ue_sm_reference
        self._obs_offset = np.array([0.0, es_ref[0], ue_ref[0]])
        self._obs_scale = np.array([1.0, es_ref[1] - es_ref[0], ue_ref[1] - ue_ref[0]])
        # with work that outlasts a slot, the budget left for new phases may fall to 0
        es_low = 0 if cfg.dynamics.work.enabled else cfg.es.sm_range[0]
        raw_low = np.array([-1.0, es_low, cfg.ue.sm_range[0]])
        raw_high = np.array([1.0, cfg.es.sm_range[1], cfg.ue.sm_range[1]])
        if self.dynamics is not None:  # each UE's own dynamics features, already on their scale
            features = len(OBSERVATION_LOW)
            self._obs_offset = np.concatenate([self._obs_offset, np.zeros(features)])
            self._obs_scale = np.concatenate([self._obs_scale, np.ones(features)])
            raw_low, raw_high = np.concatenate([raw_low, OBSERVATION_LOW]), np.concatenate([raw_high, OBSERVATION_HIGH])
        obs_low, obs_high = self._normalise(raw_low), self._normalise(raw_high)
        self.observation_spaces = {agent: spaces.Box(obs_low, obs_high, dtype=np.float32)
                                   for agent in self.possible_agents}
        state_low, state_high = np.tile(obs_low, cfg.num_ues), np.tile(obs_high, cfg.num_ues)
        if self.dynamics is not None:  # then each UE's service time left (slots) and v_max^ES / v_hi
            state_low = np.concatenate([state_low, np.zeros(cfg.num_ues), [cfg.es.sm_range[0] / cfg.es.sm_range[1]]])
            state_high = np.concatenate([state_high, np.full(cfg.num_ues, np.inf), [1.0]])
        self.state_space = spaces.Box(state_low.astype(np.float32), state_high.astype(np.float32), dtype=np.float32)

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
        self._dynamics_rng: np.random.Generator | None = None
        self._dynamics_state = None
        self._slot = None
        self._intent_group: np.ndarray | None = None
        self._intent_subjects: np.ndarray | None = None
        self._episode_seed = 0
        self._step_count = 0
        self._point: system_model.DecisionPoint | None = None
        self._last: dict[str, Any] | None = None
        self._network_summary: dict[str, Any] | None = None

    # ------------------------------------------------------------------ PettingZoo API
    def observation_space(self, agent: str) -> spaces.Box:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.MultiDiscrete:
        return self.action_spaces[agent]

    @property
    def max_cycles(self) -> int:
        """Decision points per episode (the config's `episode_length`); settable, from the next step on."""
        return self.config.episode_length

    @max_cycles.setter
    def max_cycles(self, value: int) -> None:
        self.config = self.config.with_overrides(episode_length=_check_max_cycles(value))

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None or self._rngs is None:
            sequence = np.random.SeedSequence(seed)
            self._episode_seed = int(sequence.generate_state(1)[0])
            self._rngs = {name: np.random.default_rng(child)
                          for name, child in zip(_RNG_STREAMS, sequence.spawn(len(_RNG_STREAMS)))}
            if seed is not None:  # a stream of its own, so the env's streams are unchanged by it
                space_seeds = sequence.spawn(1)[0].generate_state(self.num_ues, dtype=np.uint32).tolist()
                for agent, space_seed in zip(self.possible_agents, space_seeds):
                    self.action_spaces[agent].seed(space_seed)
            self._dynamics_rng = dynamics_generator(sequence=sequence)
        self.agents = list(self.possible_agents)
        self._step_count = 0
        self._last = None
        if self.dynamics is not None:
            self._dynamics_state = self.dynamics.initial(self._dynamics_rng)
        self._new_decision_point(first=True)
        self._network_summary = self._decision_point_summary()
        infos = self._infos({**self._decision_point_columns(), **_OUTCOME_AT_RESET, **self._observation_columns()})
        return self._observations(), infos

    def step(self, actions: dict[str, Any]):
        if self._point is None:
            raise RuntimeError("step() called before reset(); call reset() first")
        if not self.agents:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        common, personal, ue, projected, moved = self._rules(self._parse_actions(actions))
        result = self._evaluate(common, personal, ue, for_step=True)

        point = self._point
        point_columns = self._decision_point_columns()  # of the executed decision point, before it settles
        dynamic_columns = {}
        if self.dynamics is not None:  # the requests' waiting and drops (his_env.dynamics.slot)
            penalty = self.dynamics.penalty(self._slot)
            result["reward"] = result["reward"] - penalty
            result["utility"] = result["utility"] - np.sum(penalty)
            self._dynamics_state, battery_step = self.dynamics.settle(self._dynamics_state, self._slot, result)
            drained = battery_step.drained_j if battery_step is not None else np.zeros(self.num_ues)
            dynamic_columns = {"battery_moved_steps": moved.tolist(), "dynamics_penalty": penalty.tolist(),
                               "battery_drained_j": drained.tolist()}
        totals = {"network_utility": float(result["utility"]), "network_quality": float(result["total_quality"]),
                  "network_delay": float(result["total_delay"]), "network_energy": float(result["total_energy"])}
        network = {
            "utility": totals["network_utility"], "quality": totals["network_quality"],
            "delay": totals["network_delay"], "energy": totals["network_energy"],
            **self._decision_point_summary(),
            "cluster_es_sms": result["es_sms"].tolist(),
            "cluster_max_common_steps": system_model.cluster_max(common, point).tolist(),
        }
        columns = {
            **point_columns,
            "common_steps": common.tolist(), "es_personal_steps": personal.tolist(), "ue_steps": ue.tolist(),
            "projected": projected.tolist(), "es_sms": result["es_sms"][point.cluster].tolist(),
            "quality": result["quality"].tolist(), "delay": result["delay"].tolist(),
            "ue_energy": result["ue_energy"].tolist(), "es_energy_share": result["es_energy_share"].tolist(),
            **totals, **dynamic_columns,
        }
        rewards = dict(zip(self.agents, result["reward"].tolist()))
        self._last = {"common": common, "personal": personal, "ue": ue, "result": result, "network": network}
        self._network_summary = network

        self._step_count += 1
        done = self._step_count >= self.config.episode_length
        self._new_decision_point()  # the next decision point: also observed at truncation (bootstrap)
        observations = self._observations()
        infos = self._infos({**columns, **self._observation_columns()})
        terminations = dict.fromkeys(self.agents, False)
        truncations = dict.fromkeys(self.agents, done)
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def render(self, mode: str | None = None) -> str | None:
        """A text summary of the decision point (with `render_mode="ansi"`; None without a mode).

        `mode` is accepted for wrappers that still pass one (RLlib's ParallelPettingZooEnv passes
        its own `render_mode`, None): None or the env's own `render_mode`.
        """
        if mode is not None and mode != self.render_mode:
            raise ValueError(f"render(mode={mode!r}); allowed: None or this env's render_mode {self.render_mode!r} "
                             f"(the mode is set when the env is built)")
        self._require_reset("render")
        if self.render_mode is None:
            return None
        return self._render_text()

    def close(self) -> None:
        pass

    def state(self) -> np.ndarray:
        """The global state (for centralised critics): all UEs' observations, concatenated; with
        dynamics then each UE's service time left (slots) and v_max^ES / v_hi (`STATE_FEATURES`)."""
        self._require_reset("state")
        flat = self._observation_matrix.reshape(-1)
        if self.dynamics is None:
            return flat.copy()
        extra = self.dynamics.state_features(self._dynamics_state, self._slot)
        return np.concatenate([flat, extra.astype(np.float32)])

    def dynamics_books(self) -> dict[str, np.ndarray]:
        """Cumulative books per UE since reset (N,): requests (`requests_arrived`, `_served`,
        `_dropped_deadline`, `_dropped_overflow`, `_waiting`) with requests on, batteries
        (`battery_initial_j`, `battery_j`, `_drained_j`, `_recharged_j`, `_shortfall_j`, `_spilled_j`)
        with batteries on; empty without them. arrived = served + dropped + waiting and
        initial + recharged - drained = level hold after every step."""
        self._require_reset("dynamics_books")
        if self.dynamics is None:
            return {}
        return {key: np.array(value, copy=True) for key, value in self.dynamics.books(self._dynamics_state).items()}

    # ------------------------------------------------------------------ for planners and tools
    def evaluate_joint_actions(self, actions: np.ndarray, es_sm_budget: np.ndarray | None = None
                               ) -> dict[str, np.ndarray]:
        """Utility of B candidate joint actions (B, N, 2) at the current decision point, without stepping.

        Uses the same rules as `step` (projection, IIS, allocation, EC-Diff); `es_sm_budget` (B,)
        gives each candidate its own ES SM budget for the allocation (None: the decision point's;
        the difference reward's counterfactuals use `decision_context()["es_sm_budget_without_ue"]`).
        Returns "utility" (B,), "rewards" (B, N), "quality", "delay", "energy" (B,) network totals,
        and "ue_delay" (B, N): each UE's T_n (Eq. 19).
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
        point = None
        if es_sm_budget is not None:
            es_sm_budget = np.asarray(es_sm_budget)
            if es_sm_budget.shape != (len(actions),) or es_sm_budget.dtype.kind not in "iu" or (es_sm_budget < 1).any():
                raise ValueError(f"es_sm_budget of shape {es_sm_budget.shape} and dtype {es_sm_budget.dtype}; allowed: "
                                 f"integers >= 1 of shape ({len(actions)},), one per candidate")
            point = replace(self._point, es_sm_budget=es_sm_budget.astype(np.int64))
        common, personal, ue, _ = self._apply_action_rules(actions.astype(np.int64))
        result = self._evaluate(common, personal, ue, for_step=False, point=point)
        if self.dynamics is not None:  # the same charges as `step` (they do not depend on the actions)
            penalty = self.dynamics.penalty(self._slot)
            result["reward"] = result["reward"] - penalty
            result["utility"] = result["utility"] - np.sum(penalty)
        return {"utility": result["utility"], "rewards": result["reward"], "quality": result["total_quality"],
                "delay": result["total_delay"], "energy": result["total_energy"], "ue_delay": result["delay"]}

    def decode_actions(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, z) that `step` would apply to an (..., N, 2) array of actions."""
        common, personal, ue, _ = self._apply_action_rules(np.asarray(actions, dtype=np.int64))
        return common, personal, ue

    def decision_context(self) -> dict[str, Any]:
        """The current decision point (the one the next step executes), as fresh numpy arrays:
        `prompt_index` (N,) indices into `pool.texts`, `cluster` (N,) m(n), `num_clusters`,
        `similarity` (N,) phi_{n,m(n)} of Eq. (5) as the quality oracle receives it, `es_sm_budget`,
        `ue_sms` (N,), `distance_m` (N,), `downlink_rate_bps` (N,) (Eq. 15); with dynamics also
        `active` (N,) (the UEs that serve a request) and `ue_step_limit` (N,) (UE steps the battery
        pays), with work on `es_sm_budget_without_ue` (N,) (the ES budget of the slot with the SMs UE
        n's running phases hold returned: the difference reward's counterfactual), and with requests
        on `queue_length` (N,) (requests waiting behind the one each active UE starts)."""
        self._require_reset("decision_context")
        point = self._point
        extra = {} if self.dynamics is None else {"active": np.asarray(self._slot.active, dtype=bool).copy(),
                                                   "ue_step_limit": np.asarray(self._slot.ue_step_limit).copy()}
        if self.dynamics is not None and self._slot.absent_budget is not None:
            extra["es_sm_budget_without_ue"] = np.array(self._slot.absent_budget, dtype=np.int64)
        if self.dynamics is not None and self._dynamics_state.queues is not None:
            extra["queue_length"] = np.asarray(self._dynamics_state.queues.length, dtype=np.int64).copy()
        return {**extra,
            "prompt_index": np.asarray(self._prompt_index, dtype=np.int64).copy(),
            "cluster": np.asarray(point.cluster, dtype=np.int64).copy(),
            "num_clusters": int(point.num_clusters),
            "similarity": np.asarray(self._phi, dtype=np.float64).copy(),
            "es_sm_budget": int(self._es_budget),
            "ue_sms": np.asarray(point.ue_sms, dtype=np.int64).copy(),
            "distance_m": np.asarray(self._distance, dtype=np.float64).copy(),
            "downlink_rate_bps": np.asarray(point.downlink_rate, dtype=np.float64).copy(),
        }

    def network_summary(self) -> dict[str, Any]:
        """The decision point that the latest `reset` or `step` reported on, per cluster.

        Always: `scheme`, `num_clusters`, `cluster_sizes`, `cluster_similarity` (mean phi per
        cluster), `public_personal_similarity`, `intra_cluster_similarity`, `es_sm_budget`. After a
        step (for the decision point it executed) also `utility`, `quality`, `delay`, `energy`
        (U, Q, T, E of Eqs. 21-23), `cluster_es_sms` and `cluster_max_common_steps` (x_m^max).
        """
        self._require_reset("network_summary")
        return {key: list(value) if isinstance(value, list) else value
                for key, value in self._network_summary.items()}

    def current_prompts(self) -> dict[str, Any]:
        """Texts of the current decision point: personal, public (per cluster), NPI negatives, clusters."""
        self._require_reset("current_prompts")
        personal = [self.pool.texts[i] for i in self._prompt_index]
        return {"personal": personal, "public": list(self._public_texts),
                "negative": [negative_prompt(p) for p in personal], "cluster": self._point.cluster.tolist()}

    # ------------------------------------------------------------------ internals
    def _normalise(self, raw: np.ndarray) -> np.ndarray:
        return ((raw - self._obs_offset) / self._obs_scale).astype(np.float32)

    def _new_decision_point(self, first: bool = False) -> None:
        """Workload -> semantics -> clustering -> public prompts -> similarities -> resources (Alg. 2, l. 4-6);
        with dynamics, the resources and channel of the next slot (`his_env.dynamics.slot`)."""
        rng = self._rngs
        cfg, n = self.config, self.num_ues
        index = self._sample_prompts(first)
        prompts = clustering.DecisionPrompts(index, self.pool_embeddings, self._pool_entities,
                                             self._pool_similarity)
        labels = self._cluster(prompts, self.num_clusters, rng["clustering"])
        num_clusters = int(labels.max()) + 1
        embeddings = self.pool_embeddings[index]
        public_texts, phi = self._public_prompts(index, embeddings, labels, num_clusters)

        if self.dynamics is None:
            es = cfg.es.sm_range
            budget = int(rng["resources"].integers(es[0], es[1] + 1))
            ue_sms = rng["resources"].integers(cfg.ue.sm_range[0], cfg.ue.sm_range[1] + 1, size=n)
            distance = channel.sample_distances(rng["channel"], n, cfg.channel.distance_range_m)
            rate = channel.downlink_rate(channel.channel_gain(rng["channel"], distance, cfg.channel), cfg.channel)
            point = system_model.DecisionPoint(labels, num_clusters, budget, ue_sms, rate)
        else:
            self._dynamics_state, slot = self.dynamics.advance(self._dynamics_state, self._dynamics_rng, first)
            self._slot = slot
            budget, ue_sms, distance, rate = int(slot.es_budget), slot.ue_sms, slot.distance_m, slot.downlink_rate
            point = system_model.DecisionPoint(labels, num_clusters, int(slot.allocation_budget), ue_sms, rate,
                                               active=np.asarray(slot.active))

        self._prompt_index, self._prompt_embeddings, self._phi = index, embeddings, phi
        self._public_texts, self._distance = public_texts, distance
        self._point, self._es_budget = point, budget
        self._summary = None  # computed on first use
        raw = np.column_stack([np.clip(phi, -1.0, 1.0), np.full(n, float(budget)), ue_sms.astype(float)])
        if self.dynamics is not None:
            raw = np.column_stack([raw, self.dynamics.observation(self._dynamics_state, self._slot)])
        self._raw_observation = raw
        self._observation_matrix = self._normalise(raw)

    def _sample_prompts(self, first: bool) -> np.ndarray:
        """The UEs' prompts of the next decision point: drawn afresh (Workload), or within the intent
        groups the UEs keep (`dynamics.intent`: the episode's subjects are drawn at reset)."""
        rng, n = self._rngs["workload"], self.num_ues
        if not self.config.dynamics.intent.enabled:
            return self.workload.sample(n, rng)
        groups = self.workload.num_intent_groups
        if first:
            self._intent_subjects = self.workload.active_subjects(rng)
            self._intent_group = intent_process.initial_intent(dynamics_draws.uniform(rng, (n,)), groups)
        else:
            self._intent_group = intent_process.intent_step(
                self._intent_group, intent_process.draw_intent(rng, (n,)),
                self.config.dynamics.intent.keep_probability, groups)
        return self.workload.sample_in_groups(self._intent_group, self._intent_subjects, rng)

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

    def _require_reset(self, method: str) -> None:
        if self._point is None:
            raise RuntimeError(f"{method}() describes the current decision point, and there is none yet: "
                               f"call reset() first")

    def _observations(self) -> dict[str, np.ndarray]:
        return dict(zip(self.agents, self._observation_matrix))

    def _decision_point_columns(self) -> dict[str, Any]:
        """Info values of the current decision point: lists (N,) per UE, plain numbers network-wide."""
        point, summary = self._point, self._decision_point_summary()
        dynamic = {}
        if self.dynamics is not None:
            state, slot = self._dynamics_state, self._slot
            zeros = np.zeros(self.num_ues)
            dynamic = {
                "active": np.asarray(slot.active).tolist(),
                "queue_length": (state.queues.length if state.queues is not None else zeros.astype(np.int64)).tolist(),
                "requests_arrived": slot.arrived.tolist(), "requests_dropped": slot.dropped.tolist(),
                "requests_waited": slot.waited.tolist(),
                "battery_j": (state.battery_j if state.battery_j is not None else zeros).tolist(),
                "busy_slots": np.asarray(state.busy_slots, dtype=float).tolist(),
                "es_available_sms": int(slot.es_available), "es_held_sms": int(slot.es_held)}
        return {**dynamic, "cluster": point.cluster.tolist(), "similarity": self._phi.tolist(),
                "ue_sms": point.ue_sms.tolist(), "es_sm_budget": int(self._es_budget),
                "distance_m": self._distance.tolist(), "downlink_rate_bps": point.downlink_rate.tolist(),
                "num_clusters": int(point.num_clusters),
                "intra_cluster_similarity": float(summary["intra_cluster_similarity"]),
                "public_personal_similarity": float(summary["public_personal_similarity"])}

    def _observation_columns(self) -> dict[str, list]:
        raw = self._raw_observation
        return {"raw_obs_similarity": raw[:, 0].tolist(), "raw_obs_es_sm_budget": raw[:, 1].tolist(),
                "raw_obs_ue_sms": raw[:, 2].tolist()}

    def _infos(self, columns: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """infos[agent] with `info_keys` in order, from per-UE lists and network-wide numbers."""
        keys = self.info_keys
        values = [columns[key] if isinstance(columns[key], list) else repeat(columns[key]) for key in keys]
        return {agent: dict(zip(keys, row)) for agent, row in zip(self.agents, zip(*values))}

    def _decision_point_summary(self) -> dict[str, Any]:
        if self._summary is None:
            self._summary = self._summarise_decision_point()
        return self._summary

    def _summarise_decision_point(self) -> dict[str, Any]:
        point, phi = self._point, self._phi
        sizes = point.membership.sum(axis=0)  # every member (point.cluster_sizes counts the active ones)
        cluster_phi = (phi @ point.membership) / sizes
        return {
            "scheme": self.scheme.name, "num_clusters": point.num_clusters,
            "cluster_sizes": sizes.astype(int).tolist(), "cluster_similarity": cluster_phi.tolist(),
            "public_personal_similarity": float(cluster_phi.mean()),
            "intra_cluster_similarity": clustering.intra_cluster_similarity_of_embeddings(self._prompt_embeddings,
                                                                                           point.cluster),
            "es_sm_budget": int(self._es_budget),
        }

    def _parse_actions(self, actions: dict[str, Any]) -> np.ndarray:
        if not isinstance(actions, dict):
            raise ValueError(f"actions must be a dict agent -> action, got {type(actions).__name__}")
        if len(actions) != len(self.agents) or actions.keys() != set(self.agents):
            unknown = sorted(set(actions) - set(self.agents))
            missing = sorted(set(self.agents) - set(actions))
            raise ValueError(f"actions must name every live agent once: unknown agents {unknown[:5]}, "
                             f"missing agents {missing[:5]} (live agents: ue_0..ue_{self.num_ues - 1})")
        values = [actions[agent] for agent in self.agents]
        try:
            stacked = np.array(values)
        except (ValueError, TypeError):  # ragged or otherwise not one array
            stacked = None
        if (stacked is None or stacked.shape != (self.num_ues, 2) or stacked.dtype.kind not in "iuf"
                or any(_holds_booleans(value) for value in values)):
            # The stacked array cannot say whose action is at fault (numpy promotes or refuses the
            # whole batch): check each agent's action on its own.
            for agent, value in zip(self.agents, values):
                self._check_one_action(agent, value)
            stacked = np.array([np.asarray(value) for value in values])
        self._check_action_values(stacked, self.agents)
        return stacked.astype(np.int64)

    def _allowed_actions(self) -> str:
        return (f"a[0] (common steps) in 0..{self._action_nvec[0] - 1}, "
                f"a[1] (ES personalised steps - y_min) in 0..{self._action_nvec[1] - 1}")

    def _check_one_action(self, agent: str, value: Any) -> None:
        if _holds_booleans(value):
            raise ValueError(f"action of {agent} is {value!r}, which holds booleans; allowed: integers "
                             f"(not booleans), {self._allowed_actions()}")
        try:
            array = np.asarray(value)
        except (ValueError, TypeError):
            array = None
        if array is None or array.shape != (2,):
            shape = "no regular shape" if array is None else f"shape {array.shape}"
            raise ValueError(f"action of {agent} is {value!r} of {shape}; allowed: shape (2,), "
                             f"{self._allowed_actions()}")
        self._check_action_values(array[None], [agent])

    def _check_action_values(self, stacked: np.ndarray, agents: list[str] | None) -> None:
        """Integer values in range for rows (agent actions) of `stacked` (R, 2); `agents` names the
        rows (None: rows of B candidate joint actions, agent-major within each candidate)."""
        if stacked.dtype.kind not in "iu":
            # whole numbers stored as floats (e.g. from a continuous wrapper) are accepted
            whole = np.isfinite(stacked) & (stacked == np.round(stacked)) if stacked.dtype.kind == "f" else None
            if whole is None or not whole.all():
                row = 0 if whole is None else int(np.argmax(~whole.all(axis=1)))
                raise ValueError(f"action of {self._row_name(row, agents)} is {stacked[row].tolist()!r} with dtype "
                                 f"{stacked.dtype}; allowed: integers, {self._allowed_actions()}")
        bad = (stacked < 0) | (stacked >= self._action_nvec)
        if bad.any():
            row = int(np.argmax(bad.any(axis=1)))
            raise ValueError(f"action of {self._row_name(row, agents)} is {stacked[row].tolist()}; allowed: "
                             f"{self._allowed_actions()}")

    def _row_name(self, row: int, agents: list[str] | None) -> str:
        if agents is not None:
            return agents[row]
        return f"{self.possible_agents[row % self.num_ues]} in candidate {row // self.num_ues}"

    def _apply_action_rules(self, actions: np.ndarray):
        """(x, y, z, projected) from actions (..., N, 2): IIS rule, the z >= z_min projection and, with
        batteries, the UE steps a battery cannot pay moved to the ES."""
        return self._rules(actions)[:4]

    def _rules(self, actions: np.ndarray):
        """`_apply_action_rules` and the UE steps the battery rule moved (int (..., N))."""
        common, personal, ue, projected = system_model.apply_action_rules(actions, self.config.steps,
                                                                           self.scheme.common_phase)
        if self.dynamics is None:
            return common, personal, ue, projected, ue * 0
        common, personal, ue, moved = self.dynamics.battery_rule(self._slot.ue_step_limit, common, personal, ue)
        return common, personal, ue, projected, np.where(self._slot.active, moved, 0)  # inactive: nothing moved

    def _evaluate(self, common, personal, ue, for_step: bool, point=None) -> dict[str, np.ndarray]:
        point = self._point if point is None else point
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
        members = point.membership.sum(axis=0)
        sizes = members.astype(int)
        phi_m = (self._phi @ point.membership) / members
        for m in range(point.num_clusters):
            lines.append(f"  cluster {m}: {sizes[m]:3d} UEs, mean phi {phi_m[m]:.3f}, public: "
                         f"{self._public_texts[m][:70]!r}")
        if self._last is not None:
            net = self._last["network"]
            lines.append(f"  last step: U={net['utility']:.3f} Q={net['quality']:.3f} T={net['delay']:.2f}s "
                         f"E={net['energy']:.0f}J, SMs per cluster {net['cluster_es_sms']}")
        return "\n".join(lines)
