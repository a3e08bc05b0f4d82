"""Public-prompt sources (Sec. IV-B): the one interface the env asks for a decision point's public
prompts, and the registry of sources by config name (`scheme.public_prompt`).

| name | source | used by |
|---|---|---|
| `generated` | `PublicPromptGenerator` (his_env.text.generated): offline, from the cluster's prompts alone | HIS |
| `llm` | `LLMPublicPromptGenerator` (his_env.text.llm): a local causal LM | HIS ablation |
| `random_member` | a member's personal prompt, drawn uniformly | PPGFIS, CFIS |
| `none` | no public prompt: nothing is denoised in common | IIS |

Every source is built for a prompt pool (`from_config(pool, prompts_config)`) and answers
`cluster_prompts(clusters, rng)`: one text per cluster, given each cluster's members as pool
indices. A source with `writes_public_prompt = False` writes none; the env then conditions every
step of a UE on its own prompt, so its public-personal similarity is 1 (see the env docstring).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from his_common.registry import Registry



class PublicPromptSource(ABC):
    """Writes the public prompt of every cluster of a decision point."""

    #: False for a source that writes no public prompt (no common phase to condition).
    writes_public_prompt: bool = True

    @classmethod
    @abstractmethod
    def from_config(cls, pool, config=None) -> "PublicPromptSource":
        """The source for a `PromptPool` (anything with `.texts`), with the `prompts:` settings
        (his_env.config.PromptsConfig, or None for its defaults)."""

    @abstractmethod
    def cluster_prompts(self, clusters: Sequence[np.ndarray], rng: np.random.Generator) -> list[str]:
        """One public prompt per cluster; `clusters[m]` holds the pool indices of cluster m's
        members (non-empty). `rng` is the env's public-prompt random stream."""


PUBLIC_PROMPT_SOURCES: Registry[type[PublicPromptSource]] = Registry("public-prompt source")


def cluster_key(prompts) -> tuple[str, ...]:
    """A cluster's personal prompts as a memo key, after checking them."""
    if isinstance(prompts, str):
        raise TypeError("generate() takes a list of prompts, not one string")
    key = tuple(prompts)
    if not key:
        raise ValueError("a public prompt needs at least one personal prompt (empty cluster)")
    for text in key:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"personal prompts must be non-empty strings, got {text!r}")
    return key


@PUBLIC_PROMPT_SOURCES.register("random_member")
class RandomMemberPrompt(PublicPromptSource):
    """The PPGFIS / CFIS public prompt: the personal prompt of a member drawn uniformly."""

    def __init__(self, pool):
        self.pool = pool

    @classmethod
    def from_config(cls, pool, config=None) -> "RandomMemberPrompt":
        return cls(pool)

    def cluster_prompts(self, clusters, rng) -> list[str]:
        texts = self.pool.texts
        return [texts[int(members[rng.integers(len(members))])] for members in clusters]


@PUBLIC_PROMPT_SOURCES.register("none")
class NoPublicPrompt(PublicPromptSource):
    """IIS: no public prompt. Each cluster's entry is the empty string (nothing reads it: with no
    common steps the live sampler runs no common phase)."""

    writes_public_prompt = False

    @classmethod
    def from_config(cls, pool, config=None) -> "NoPublicPrompt":
        return cls()

    def cluster_prompts(self, clusters, rng) -> list[str]:
        return [""] * len(clusters)
