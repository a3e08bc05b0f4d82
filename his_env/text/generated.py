"""The offline public-prompt generator (Sec. IV-B): one deterministic sentence per cluster, made
only of what the cluster's own prompts say."""
from __future__ import annotations

import math

import numpy as np

from his_env.text.phrases import ROLES, article_for, prompt_parts
from his_env.text.public import PUBLIC_PROMPT_SOURCES, PublicPromptSource, cluster_key


@PUBLIC_PROMPT_SOURCES.register("generated")
class PublicPromptGenerator(PublicPromptSource):
    """One public prompt per cluster, stating what the cluster's personal prompts share.

    Every prompt of a pool is taken apart once (`prompt_parts`) into its main entity and role
    phrases (modifiers, "with" features, actions, settings, scene); `from_pool` turns these
    into a prompt x phrase incidence matrix. For a cluster, `generate_for(indices)` counts
    entities and phrases over the members with numpy and writes one sentence:

        "A {modifiers} {majority entity}[ and a {second entity}] with {features}
         {actions} {settings}, {scene}."

    A phrase can be used when at least `shared_fraction` of the members, and at least two of
    them, say it (the cluster's general characteristics); of these, the most widely shared come
    first (ties: first appearance in the pool), at most `values_per_role` per role and
    `max_phrases` in all (None: no overall cap). A second entity is named when at least
    `second_entity_fraction` of the members are about it. Nothing else enters the sentence:
    every word of it comes from a member's prompt (verbs as their -ing form), so the public
    prompt uses no information beyond what the ES received from the cluster. The public prompt
    of a one-member cluster is that member's prompt.

    The sentence depends on the cluster only through (majority entity, second entity, chosen
    phrases), which is the memo key. With the default `max_phrases=1` the distinct public
    prompts of a pool are few (subject, subject pair, subject plus one phrase) and a run soon
    finds each of them in the embedding cache; every further allowed phrase multiplies that
    set, and each new text costs a model call (milliseconds). After warm-up a call costs a few
    microseconds of counting plus a dict lookup.

    `generate(prompts)` does the same for arbitrary texts (the texts form their own pool).
    """

    dense_limit = 20_000_000  # prompts x phrases up to which the incidence is a dense uint8 matrix

    def __init__(self, values_per_role: int | dict[str, int] = 2, shared_fraction: float = 0.5,
                 second_entity_fraction: float = 1 / 3, max_phrases: int | None = 1,
                 memo_size: int = 100_000):
        per_role = (dict.fromkeys(ROLES, values_per_role) if isinstance(values_per_role, int)
                    else {**dict.fromkeys(ROLES, 2), **values_per_role})
        unknown = set(per_role) - set(ROLES)
        if unknown or any(not isinstance(v, int) or v < 0 for v in per_role.values()):
            raise ValueError(f"values_per_role must be an int >= 0 or a dict over {list(ROLES)}, "
                             f"got {values_per_role!r}")
        if not 0.0 < shared_fraction <= 1.0 or not 0.0 < second_entity_fraction <= 1.0:
            raise ValueError("shared_fraction and second_entity_fraction must lie in (0, 1], got "
                             f"{shared_fraction!r} and {second_entity_fraction!r}")
        self.values_per_role = per_role
        self.shared_fraction = float(shared_fraction)
        self.second_entity_fraction = float(second_entity_fraction)
        if max_phrases is not None and (not isinstance(max_phrases, int) or max_phrases < 0):
            raise ValueError(f"max_phrases must be None or an int >= 0, got {max_phrases!r}")
        self.max_phrases = max_phrases
        self.memo_size = memo_size
        self.pool = None
        self._texts: tuple[str, ...] | None = None
        self._memo: dict[tuple, str] = {}
        self._text_memo: dict[tuple[str, ...], str] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pool(cls, pool, **options) -> "PublicPromptGenerator":
        """A generator bound to a `PromptPool` (anything with `.texts`), for `generate_for`."""
        generator = cls(**options)
        generator._bind(list(pool.texts))
        generator.pool = pool
        return generator

    @classmethod
    def from_config(cls, pool, config=None) -> "PublicPromptGenerator":
        return cls.from_pool(pool)

    def _bind(self, texts: list[str]) -> None:
        if not texts:
            raise ValueError("a public prompt needs at least one personal prompt")
        parts = [prompt_parts(t) for t in texts]
        entities = list(dict.fromkeys(p.entity for p in parts))
        entity_id = {e: k for k, e in enumerate(entities)}
        phrase_id: dict[tuple[str, str], int] = {}
        rows, cols = [], []
        for row, p in enumerate(parts):
            for role in ROLES:
                for value in dict.fromkeys(getattr(p, role)):
                    col = phrase_id.setdefault((role, value), len(phrase_id))
                    rows.append(row)
                    cols.append(col)
        self._texts = tuple(texts)
        self._entities = entities
        self._entity_of_prompt = np.array([entity_id[p.entity] for p in parts], dtype=np.int64)
        self._phrases = list(phrase_id)  # (role, value), in order of first appearance
        self._role_of_phrase = np.array([ROLES.index(r) for r, _ in self._phrases], dtype=np.int64)
        num_prompts, num_phrases = len(parts), max(len(phrase_id), 1)
        rows_a, cols_a = np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)
        if num_prompts * num_phrases <= self.dense_limit:
            incidence = np.zeros((num_prompts, num_phrases), dtype=np.uint8)
            incidence[rows_a, cols_a] = 1
            self._incidence = incidence
        else:  # large pools: CSR rows
            self._incidence = None
            self._row_start = np.searchsorted(rows_a, np.arange(num_prompts + 1))
            self._cols = cols_a
        self._num_phrases = num_phrases
        self._memo.clear()

    # ------------------------------------------------------------------ PublicPromptSource
    def cluster_prompts(self, clusters, rng=None) -> list[str]:
        return [self.generate_for(members) for members in clusters]

    # ------------------------------------------------------------------ generation
    def generate_for(self, indices) -> str:
        """The public prompt of the cluster whose members are pool prompts `indices`."""
        if self._texts is None:
            raise RuntimeError("generate_for needs a generator built with "
                               "PublicPromptGenerator.from_pool(pool); use generate(prompts)")
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(indices)
        if n == 0:
            raise ValueError("a public prompt needs at least one personal prompt (empty cluster)")
        if n == 1:
            return self._texts[int(indices[0])]
        entity_counts = np.bincount(self._entity_of_prompt[indices], minlength=len(self._entities))
        ranked = np.argsort(-entity_counts, kind="stable")
        major = int(ranked[0])
        second = -1
        if len(ranked) > 1 and entity_counts[ranked[1]] >= max(
                1, self.second_entity_fraction * n):
            second = int(ranked[1])
        if self._incidence is not None:
            counts = self._incidence[indices].sum(axis=0, dtype=np.int64)
        else:
            cols = np.concatenate([self._cols[self._row_start[i]:self._row_start[i + 1]]
                                   for i in indices])
            counts = np.bincount(cols, minlength=self._num_phrases)
        needed = max(2, math.ceil(self.shared_fraction * n - 1e-9))
        shared = np.flatnonzero(counts >= needed)
        if len(shared) > 1:  # most widely shared first; ties by first appearance (stable sort)
            shared = shared[np.argsort(-counts[shared], kind="stable")]
            shared = shared[self._within_role_caps(shared)][: self.max_phrases]
        key = (major, second, tuple(shared.tolist()))
        text = self._memo.get(key)
        if text is None:
            text = self._compose(major, second, key[2])
            if len(self._memo) >= self.memo_size:
                self._memo.clear()
            self._memo[key] = text
        return text

    def generate(self, prompts) -> str:
        """The public prompt of a cluster given as texts (memoised by the tuple of texts)."""
        key = cluster_key(prompts)
        text = self._text_memo.get(key)
        if text is None:
            scratch = PublicPromptGenerator(self.values_per_role, self.shared_fraction,
                                            self.second_entity_fraction, self.max_phrases)
            scratch._bind(list(key))
            text = scratch.generate_for(range(len(key)))
            if len(self._text_memo) >= self.memo_size:
                self._text_memo.clear()
            self._text_memo[key] = text
        return text

    def _within_role_caps(self, ranked: np.ndarray) -> np.ndarray:
        """Mask of the ranked phrases kept by the per-role caps (`values_per_role`)."""
        roles = self._role_of_phrase[ranked]
        keep = np.zeros(len(ranked), dtype=bool)
        for r, role in enumerate(ROLES):
            keep[np.flatnonzero(roles == r)[: self.values_per_role[role]]] = True
        return keep

    def _compose(self, major: int, second: int, shared: tuple[int, ...]) -> str:
        chosen: dict[str, list[str]] = {}
        for r, role in enumerate(ROLES):
            chosen[role] = [self._phrases[f][1] for f in shared if self._role_of_phrase[f] == r]
        entity = self._entities[major]
        subject = " and ".join(chosen["modifier"]) + " " + entity if chosen["modifier"] else entity
        words = [article_for(subject), subject]
        if second >= 0:
            other = self._entities[second]
            words += ["and", article_for(other).lower(), other]
        if chosen["feature"]:
            words += ["with", " and ".join(chosen["feature"])]
        if chosen["action"]:
            words.append(" and ".join(chosen["action"]))
        if chosen["setting"]:
            words.append(" and ".join(chosen["setting"]) if not chosen["action"] else
                         " or ".join(chosen["setting"]))
        text = " ".join(words)
        if chosen["scene"]:
            text += ", " + ", ".join(chosen["scene"])
        return text[:1].upper() + text[1:] + "."
