"""The batched HIS step: B independent decision points x N UEs in torch tensors, CPU or CUDA.

Nothing here restates a formula: actions go through `system_model.apply_action_rules` (IIS rule,
projection), `system_model.es_work` (EC-Diff call counts), `hiqm.eq7_quality` (Eq. 7, with
EC-Diff's approximation loss) and `system_model.evaluate` (Theorem 1 with its integer rounding or
an equal split, Eqs. 8-23, 33; the difference reward's counterfactuals through
`system_model.counterfactual_utilities` with EC-Diff off): the same functions the PettingZoo env
runs on numpy arrays, here on tensors with leading batch dimensions. Contexts come from a
`DecisionBank`; resources and the channel are drawn here with the distributions of the PettingZoo
env (`his_env.channel`). With dynamics on, the env builds contexts from the bank's text side and a
`his_env.dynamics.slot.Slot` (`dynamics_contexts`): the active mask and the battery's step limits
then reach the same formulas as in the PettingZoo env.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from his_env import channel, schemes, system_model
from his_env.config import HISConfig
from quality_oracle import build_oracle
from quality_oracle.hiqm import HIQMOracle, eq7_quality, with_approximation_loss

COUNTERFACTUAL_ELEMENTS = 1 << 22  # UE decisions per batched evaluation of the difference reward


@dataclass
class Contexts:
    """Decision points of B envs: the bank's part and the resources drawn per step."""

    cluster: torch.Tensor  # int64 (B, N)
    num_clusters: torch.Tensor  # int64 (B,)
    similarity: torch.Tensor  # float (B, N), phi_{n,m(n)}
    es_sm_budget: torch.Tensor  # int64 (B,)
    ue_sms: torch.Tensor  # int64 (B, N)
    distance_m: torch.Tensor  # float (B, N)
    downlink_rate: torch.Tensor  # float (B, N), bit/s
    bank_index: torch.Tensor  # int64 (B,): row of the bank (-1: loaded explicitly)
    # with dynamics only (None without):
    active: torch.Tensor | None = None  # bool (B, N): the UEs that serve a request
    ue_step_limit: torch.Tensor | None = None  # int64 (B, N): UE steps the battery pays
    observed_es_budget: torch.Tensor | None = None  # int64 (B,): the budget left for new phases, as observed
    # the 7 `slot.OBSERVATION_FEATURES`, each broadcasting to (B, N) (`SlotDynamics.observation_features`)
    dynamics_observation: tuple | None = None
    absent_budget: torch.Tensor | None = None  # int64 (B, N): the budget without UE n (`Slot.absent_budget`)

    def where(self, mask: torch.Tensor, other: "Contexts") -> "Contexts":
        """Rows of `other` where mask (B,) is True, of self elsewhere."""
        out = {}
        def rows(mine, theirs):
            if isinstance(mine, tuple):
                return tuple(rows(*pair) for pair in zip(mine, theirs))
            if not isinstance(mine, torch.Tensor):  # a number for every env
                return mine
            return torch.where(mask.reshape(mask.shape + (1,) * (mine.dim() - 1)), theirs, mine)

        return Contexts(**{f.name: None if getattr(self, f.name) is None else
                           rows(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)})


class VectorCore:
    """Batched decision points of one configuration; see the module docstring."""

    def __init__(self, config: HISConfig, bank, num_envs: int, device: torch.device, dtype: torch.dtype):
        self.config = config
        self.scheme = schemes.resolve(config.scheme)
        self.num_envs, self.num_ues = int(num_envs), config.num_ues
        self.device, self.dtype = device, dtype
        oracle = build_oracle(config.oracle, config.ecdiff)
        if not isinstance(oracle, HIQMOracle):
            raise ValueError(f"oracle.kind={config.oracle.kind!r}: the vectorised env needs the fitted HIQM "
                             f"oracle (oracle.kind: fitted)")
        family = oracle._family(int(self.scheme.sim_npi))
        self._knots = torch.as_tensor(family.knots, dtype=dtype, device=device)
        self._coefficients = torch.as_tensor(family.coefficients, dtype=dtype, device=device)
        self._step_range = family.step_range
        self._approximation_loss = oracle.approximation_loss_per_step if config.ecdiff.enabled else 0.0
        self.bank = bank
        self._bank_cluster = torch.as_tensor(bank.cluster, device=device)
        self._bank_num_clusters = torch.as_tensor(bank.num_clusters, device=device)
        self._bank_similarity = torch.as_tensor(bank.similarity, dtype=dtype, device=device)
        self.max_clusters = max(bank.max_clusters, 1 if self.scheme.clustering == "single" else config.num_clusters)
        steps = config.steps
        self.action_nvec = (steps.max_common + 1, steps.max_es_personal - steps.min_es_personal + 1)
        es_ref, ue_ref = config.observation.es_sm_reference, config.observation.ue_sm_reference
        self._obs_offset = torch.tensor([0.0, es_ref[0], ue_ref[0]], dtype=dtype, device=device)
        self._obs_scale = torch.tensor([1.0, es_ref[1] - es_ref[0], ue_ref[1] - ue_ref[0]], dtype=dtype,
                                       device=device)
        self.dynamics = None  # the env's SlotDynamics, set by HISVecEnv when a process is on (battery rule)

    # ------------------------------------------------------------------ contexts
    def sample(self, generator: torch.Generator) -> Contexts:
        """B fresh decision points: bank rows drawn uniformly, resources and channel drawn afresh."""
        return self.contexts_of(self.sample_draws(generator))

    def sample_draws(self, generator: torch.Generator) -> tuple:
        """The random draws of B fresh decision points (`contexts_of` turns them into contexts): bank
        rows (B,), ES SM budgets (B,), UE SMs (B, N), area fractions of the UEs' distances (B, N)
        and, with Rayleigh fading, uniforms of its power gains (B, N) (else None)."""
        cfg, b, n, dev = self.config, self.num_envs, self.num_ues, self.device
        row = torch.randint(len(self.bank), (b,), generator=generator, device=dev)
        es_lo, es_hi = cfg.es.sm_range
        ue_lo, ue_hi = cfg.ue.sm_range
        budget = torch.randint(es_lo, es_hi + 1, (b,), generator=generator, device=dev)
        ue_sms = torch.randint(ue_lo, ue_hi + 1, (b, n), generator=generator, device=dev)
        fraction = torch.rand((b, n), generator=generator, device=dev, dtype=self.dtype)
        uniform = (torch.rand((b, n), generator=generator, device=dev, dtype=self.dtype)
                   if cfg.channel.rayleigh_fading else None)
        return row, budget, ue_sms, fraction, uniform

    def contexts_of(self, drawn: tuple) -> Contexts:
        """The decision points of `sample_draws`' draws: no random draws (a step captures it)."""
        cfg = self.config
        row, budget, ue_sms, fraction, uniform = drawn
        distance = channel.distance_from_area_fraction(fraction, cfg.channel.distance_range_m)
        gain = channel.path_gain(distance, cfg.channel)
        if uniform is not None:  # unit-mean exponential power gain
            gain = gain * -torch.log1p(-uniform)  # exponential(1) by inversion
        return Contexts(*self._bank_text(row), budget, ue_sms, distance, channel.downlink_rate(gain, cfg.channel), row)

    def _bank_text(self, row: torch.Tensor) -> tuple:
        """The text side of bank rows (B,): clusters, cluster counts, phi."""
        return self._bank_cluster[row], self._bank_num_clusters[row], self._bank_similarity[row]

    def dynamics_contexts(self, text, row: torch.Tensor, slot, observation: tuple) -> Contexts:
        """Contexts of a slot with dynamics: the text side (cluster, num_clusters, similarity; None:
        that of the bank rows `row`), the bank rows it came from (-1: replayed), the `Slot` and the
        UEs' dynamics features (`SlotDynamics.observation_features`)."""
        cluster, num_clusters, similarity = self._bank_text(row) if text is None else text
        return Contexts(cluster, num_clusters, similarity, slot.allocation_budget, slot.ue_sms, slot.distance_m,
                        slot.downlink_rate, row, slot.active, slot.ue_step_limit, slot.es_budget, observation,
                        slot.absent_budget)

    def contexts_from(self, context: dict[str, Any]) -> Contexts:
        """Contexts from explicit values (`bank.decision_context` layout), one for all envs or (B, ...) each."""
        b, n = self.num_envs, self.num_ues

        def tensor(key, dtype, per_ue):
            value = torch.as_tensor(np.asarray(context[key]), dtype=dtype, device=self.device)
            shape = (b, n) if per_ue else (b,)
            if value.shape not in (shape, shape[1:]):
                raise ValueError(f"decision context {key!r} of shape {tuple(value.shape)}; allowed: "
                                 f"{shape[1:]} (all envs) or {shape}")
            return value.expand(shape).clone()

        cluster = tensor("cluster", torch.int64, True)
        num_clusters = tensor("num_clusters", torch.int64, False)
        if int(num_clusters.max()) > self.max_clusters or int(cluster.max()) >= int(num_clusters.max()):
            raise ValueError(f"decision context with {int(num_clusters.max())} clusters (labels up to "
                             f"{int(cluster.max())}); allowed: at most {self.max_clusters}, labels below it")
        return Contexts(cluster, num_clusters, tensor("similarity", self.dtype, True),
                        tensor("es_sm_budget", torch.int64, False), tensor("ue_sms", torch.int64, True),
                        tensor("distance_m", self.dtype, True), tensor("downlink_rate_bps", self.dtype, True),
                        torch.full((b,), -1, dtype=torch.int64, device=self.device))

    def raw_observation(self, ctx: Contexts) -> torch.Tensor:
        """Eq. (31) unnormalised (B, N, 3): phi, ES SM budget, UE SMs."""
        phi = ctx.similarity.clamp(-1.0, 1.0)
        observed = ctx.es_sm_budget if ctx.observed_es_budget is None else ctx.observed_es_budget
        budget = observed.to(self.dtype)[:, None].expand_as(phi)
        return torch.stack([phi, budget, ctx.ue_sms.to(self.dtype)], dim=-1)

    def observation(self, ctx: Contexts) -> torch.Tensor:
        """Eq. (31) min-max normalised as the PettingZoo env does, float32 (B, N, 3); with dynamics
        followed by each UE's dynamics features (B, N, 10)."""
        eq31 = (self.raw_observation(ctx) - self._obs_offset) / self._obs_scale
        if ctx.dynamics_observation is None:
            return eq31.to(torch.float32)
        width = eq31.shape[-1]
        out = eq31.new_empty(eq31.shape[:-1] + (width + len(ctx.dynamics_observation),), dtype=torch.float32)
        out[..., :width] = eq31  # each value rounded to float32 once, as the whole would be
        for k, feature in enumerate(ctx.dynamics_observation):  # no (B, N, 7) float array in between
            out[..., width + k] = feature
        return out

    # ------------------------------------------------------------------ evaluation
    def _point(self, ctx: Contexts, candidates: bool, budget: torch.Tensor | None = None) -> system_model.DecisionPoint:
        """The decision points, with a candidate axis (B, 1, ...) for candidates (B, K, N, 2);
        `budget` (B, K): each candidate's ES budget instead of the decision point's."""
        lift = (lambda t: t[:, None]) if candidates else (lambda t: t)
        budget = lift(ctx.es_sm_budget) if budget is None else budget
        return system_model.DecisionPoint(lift(ctx.cluster), lift(ctx.num_clusters), budget,
                                          lift(ctx.ue_sms), lift(ctx.downlink_rate), self.max_clusters,
                                          None if ctx.active is None else lift(ctx.active))

    def _decisions(self, ctx: Contexts, actions: torch.Tensor):
        """(x, y, z) of actions (B, N, 2) or (B, K, N, 2) and their Eq. (7) Q (without EC-Diff's loss)."""
        similarity = ctx.similarity[:, None] if actions.dim() == 4 else ctx.similarity
        common, personal, ue, _ = system_model.apply_action_rules(actions, self.config.steps, self.scheme.common_phase)
        if ctx.ue_step_limit is not None:  # batteries: the UE steps they cannot pay go to the ES
            limit = ctx.ue_step_limit[:, None] if actions.dim() == 4 else ctx.ue_step_limit
            common, personal, ue, _ = self.dynamics.battery_rule(limit, common, personal, ue)
        quality = eq7_quality(common, similarity, self._knots, self._coefficients, self._step_range)
        return common, personal, ue, quality

    def evaluate(self, ctx: Contexts, actions: torch.Tensor, budget: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
        """Costs, rewards and utility of integer actions (B, N, 2) or candidates (B, K, N, 2) (with
        `budget` (B, K), each candidate's ES budget)."""
        point = self._point(ctx, actions.dim() == 4, budget)
        common, personal, ue, quality = self._decisions(ctx, actions)
        work = system_model.es_work(self.config, point, common, personal, self.config.ecdiff.enabled)
        if self._approximation_loss:
            quality = with_approximation_loss(quality, work.approximated_steps.to(self.dtype), self._approximation_loss)
        return system_model.evaluate(self.config, point, common, personal, ue, work, quality, self.scheme.allocation)

    def evaluate_with_counterfactuals(self, ctx: Contexts, actions: torch.Tensor, default_action):
        """The results of the actions (B, N, 2) and U of the N counterfactuals (B, N): for each UE n,
        the actions with n's replaced by `default_action` (and with dynamics, the ES budget
        `ctx.absent_budget`: the SMs n's running phases hold returned).

        With EC-Diff off, `system_model.counterfactual_utilities` gives all N in O(N M) per env;
        with EC-Diff on (members' call schedules and approximation losses are coupled), the N + 1
        joint actions go through `evaluate` (`counterfactuals_by_candidates`).
        """
        if self.config.ecdiff.enabled:
            return self.counterfactuals_by_candidates(ctx, actions, default_action)
        point = self._point(ctx, False)
        common, personal, ue, quality = self._decisions(ctx, actions)
        work = system_model.es_work(self.config, point, common, personal, False)
        actual = system_model.evaluate(self.config, point, common, personal, ue, work, quality, self.scheme.allocation)
        default = torch.as_tensor(default_action, dtype=actions.dtype, device=self.device).expand_as(actions)
        default_common, default_personal, default_ue, default_quality = self._decisions(ctx, default)
        without = system_model.counterfactual_utilities(
            self.config, point, common, personal, ue, quality, default_common, default_personal, default_ue,
            default_quality, self.scheme.allocation, ctx.absent_budget)
        return actual, without

    def counterfactuals_by_candidates(self, ctx: Contexts, actions: torch.Tensor, default_action):
        """`evaluate_with_counterfactuals` by the batched evaluation of N + 1 joint actions per env:
        the actions themselves (candidate 0) and, for each UE n, the actions with n's replaced by
        `default_action` (candidate n + 1); O(N^2) per env, any EC-Diff setting.

        Candidates are evaluated in groups of at most `COUNTERFACTUAL_ELEMENTS` UE decisions, so
        memory stays bounded at large B x N^2.
        """
        b, n = self.num_envs, self.num_ues
        default = torch.as_tensor(default_action, dtype=actions.dtype, device=self.device)
        per_group = max(1, COUNTERFACTUAL_ELEMENTS // (b * n))
        utilities, actual = [], None
        for first in range(0, n + 1, per_group):
            candidates = torch.arange(first, min(first + per_group, n + 1), device=self.device)
            replaced = (candidates[:, None] - 1 == torch.arange(n, device=self.device))[None, :, :, None]
            batch = torch.where(replaced, default, actions[:, None].expand(b, len(candidates), n, 2))
            budget = None
            if ctx.absent_budget is not None:  # candidate 0 at the slot's budget, candidate n + 1 without UE n's SMs
                budget = torch.cat([ctx.es_sm_budget[:, None], ctx.absent_budget], dim=1)[:, candidates]
            results = self.evaluate(ctx, batch, budget)
            if first == 0:
                actual = {key: value[:, 0] for key, value in results.items()}
            utilities.append(results["utility"])
        return actual, torch.cat(utilities, dim=1)[:, 1:]
