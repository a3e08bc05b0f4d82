"""Re-run the HIS paper's HIQM experiment (Sec. III-E, steps 1-4) on a given model and refit Eq. 7.

    python -m experiments.measure_hiqm --model PATH --clip PATH --out results.csv [--seeds 4 ...]

1. **Prompt similarity (step 1)**: public-personal prompt pairs, from a pairs file
   (``--pairs``: public_prompt, personal_prompt, negative_prompt, similarity) or built from a
   prompts file (``--prompts``, default the shipped ``his_env/data/prompts_reference.csv``): every
   ordered pair of two different personal prompts (one serving as the public prompt) and every
   row's own public prompt. Similarity is Eq. 5 with all-MiniLM-L6-v2
   (`his_env.semantics.SentenceEmbedder`). Pairs are binned to the nearest similarity bin
   (default 0.2 ... 0.7, as the published data, +-0.05) and up to ``--pairs-per-bin`` drawn per bin.
2. **Image generation (step 2)**: for each pair, seed and SIM/NPI setting, one HIS cluster whose
   users take every common-step count x = 0 .. T-1 of the same personal prompt (y = T - x, z = 0):
   one common run serves all of them. SIM/NPI on: w1 = ``--guidance-common``, w2 =
   ``--guidance-personal`` with the pair's NPI negative prompt; off: w1 = w2, no negative prompt.
3. **Quality (step 3)**: CLIP alignment of each image with its personal prompt (Eq. 6).
4. **Fit (step 4)**: mean score per (sim_npi, similarity bin, common steps) written to ``--out``
   with exactly the columns of ``quality_oracle/data/hiqm_sd3_medium.csv``, then Eq. 7 refitted by
   `quality_oracle.hiqm.HIQMOracle.from_csv`; the per-curve RMSE and each iota's fit check are
   printed. A fit the data cannot support (see `quality_oracle.hiqm`) is refused: the command
   exits with status 1 after printing the errors, and the measurements stay on disk.

Every finished unit (pair x seed x setting) is appended to ``<out stem>.raw.csv`` and flushed to
disk (fsync) and the aggregate is rewritten atomically, so an interrupted run resumes where it
stopped: finished units are skipped.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from his_common.storage import atomic_write_text

OUT_COLUMNS = ("sim_npi", "similarity", "common_steps", "clip_score")
RAW_COLUMNS = ("sim_npi", "similarity", "pair_similarity", "pair_id", "seed", "common_steps", "clip_score")
PAIR_COLUMNS = ("public_prompt", "personal_prompt", "negative_prompt", "similarity")
DEFAULT_PROMPTS = Path(__file__).resolve().parent.parent / "his_env" / "data" / "prompts_reference.csv"
DEFAULT_BINS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


class MeasurementError(RuntimeError):
    """The experiment cannot be set up or refitted (missing input, missing module)."""


# ----------------------------------------------------------------------------- step 1: pairs


@dataclass(frozen=True)
class PromptPair:
    public: str
    personal: str
    negative: str
    similarity: float  # Eq. (5)

    @property
    def pair_id(self) -> str:
        text = "\0".join((self.public, self.personal, self.negative))
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def read_prompt_rows(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise MeasurementError(f"prompts file {str(path)!r} does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "personal_prompt" not in rows[0]:
        raise MeasurementError(f"prompts file {str(path)!r} needs a personal_prompt column "
                               "(optional: negative_prompt, public_prompt)")
    return rows


def candidate_pairs(rows: Sequence[dict[str, str]]) -> list[tuple[str, str, str]]:
    """(public, personal, negative) of every ordered pair of distinct personal prompts + own publics."""
    personal = [(r["personal_prompt"].strip(), (r.get("negative_prompt") or "").strip()) for r in rows]
    personal = list(dict.fromkeys(p for p in personal if p[0]))
    out = [(pub, per, neg) for pub, _ in personal for per, neg in personal if pub != per]
    for r in rows:
        pub = (r.get("public_prompt") or "").strip()
        if pub and r["personal_prompt"].strip():
            out.append((pub, r["personal_prompt"].strip(), (r.get("negative_prompt") or "").strip()))
    return list(dict.fromkeys(out))


def sentence_similarity(pairs: Sequence[tuple[str, str, str]],
                        embed: Callable[[list[str]], np.ndarray] | None = None) -> np.ndarray:
    """Eq. (5) cosine similarity of each pair's public and personal prompt embeddings."""
    if embed is None:
        try:
            from his_env.semantics import SentenceEmbedder
        except ImportError as err:
            raise MeasurementError(
                "similarities need his_env.semantics.SentenceEmbedder (all-MiniLM-L6-v2), which is not "
                f"available ({err}); pass --pairs FILE with a similarity column instead") from err
        embed = SentenceEmbedder().embed
    texts = list(dict.fromkeys([p[0] for p in pairs] + [p[1] for p in pairs]))
    vectors = np.asarray(embed(texts), dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    row = {t: i for i, t in enumerate(texts)}
    pub = vectors[[row[p[0]] for p in pairs]]
    per = vectors[[row[p[1]] for p in pairs]]
    return (pub * per).sum(1)


def bin_pairs(pairs: Sequence[PromptPair], bins: Sequence[float], width: float, per_bin: int,
              seed: int = 0) -> dict[float, list[PromptPair]]:
    """Up to `per_bin` pairs per similarity bin (|similarity - bin| <= width / 2), drawn at random."""
    rng = np.random.default_rng(seed)
    out: dict[float, list[PromptPair]] = {}
    for b in bins:
        members = [p for p in pairs if abs(p.similarity - b) <= width / 2 + 1e-12
                   and min(bins, key=lambda c: abs(p.similarity - c)) == b]
        if len(members) > per_bin:
            members = [members[i] for i in sorted(rng.choice(len(members), per_bin, replace=False))]
        if members:
            out[float(b)] = members
    return out


def read_pairs(path: str | Path) -> list[PromptPair]:
    path = Path(path)
    if not path.is_file():
        raise MeasurementError(f"pairs file {str(path)!r} does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("public_prompt", "personal_prompt", "similarity") if c not in (reader.fieldnames or [])]
        if missing:
            raise MeasurementError(f"pairs file {str(path)!r} lacks the columns {missing}; expected {PAIR_COLUMNS}")
        return [PromptPair(r["public_prompt"], r["personal_prompt"], r.get("negative_prompt") or "",
                           float(r["similarity"])) for r in reader]


def write_pairs(path: str | Path, pairs: Iterable[PromptPair]) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(PAIR_COLUMNS)
        for p in pairs:
            w.writerow([p.public, p.personal, p.negative, f"{p.similarity:.6f}"])


# ----------------------------------------------------------------------------- steps 2-4: runs


@dataclass(frozen=True)
class Unit:
    """One cluster run: a pair at a seed and a SIM/NPI setting -> scores at every common step."""

    sim_npi: int
    similarity_bin: float
    pair: PromptPair
    seed: int

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.sim_npi, self.pair.pair_id, self.seed)


def raw_path_for(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".raw.csv")


def _read_raw(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):  # an interrupted write cut the last line: it does not count
        text = text[: text.rfind("\n") + 1]
    rows = []
    for r in csv.DictReader(text.splitlines()):  # raw rows hold no free text, one line each
        try:
            int(r["sim_npi"]), float(r["similarity"]), int(r["seed"]), int(r["common_steps"])
            float(r["clip_score"])
        except (TypeError, ValueError, KeyError):
            continue
        rows.append(r)
    return rows


def done_units(raw: Path, common_steps: Sequence[int]) -> set[tuple[int, str, int]]:
    need = set(int(x) for x in common_steps)
    seen: dict[tuple[int, str, int], set[int]] = {}
    for r in _read_raw(raw):
        seen.setdefault((int(r["sim_npi"]), r["pair_id"], int(r["seed"])), set()).add(int(r["common_steps"]))
    return {k for k, xs in seen.items() if need <= xs}


def _append_raw(raw: Path, unit: Unit, common_steps: Sequence[int], scores: Sequence[float]) -> None:
    new = not raw.is_file() or raw.stat().st_size == 0
    partial_line = False
    if not new:
        with raw.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            partial_line = f.read(1) != b"\n"  # an interrupted write left a cut line
    with raw.open("a", newline="", encoding="utf-8") as f:
        if partial_line:
            f.write("\n")
        w = csv.writer(f, lineterminator="\n")
        if new:
            w.writerow(RAW_COLUMNS)
        for x, s in zip(common_steps, scores):
            w.writerow([unit.sim_npi, f"{unit.similarity_bin:g}", f"{unit.pair.similarity:.6f}",
                        unit.pair.pair_id, unit.seed, int(x), f"{float(s):.9f}"])
        f.flush()
        os.fsync(f.fileno())


def aggregate(raw: Path, out: Path) -> int:
    """Mean CLIP score per (sim_npi, similarity bin, common steps) -> `out` (atomic); rows written."""
    last: dict[tuple, float] = {}
    for r in _read_raw(raw):  # a redone unit's later rows win
        last[(int(r["sim_npi"]), float(r["similarity"]), r["pair_id"], int(r["seed"]),
              int(r["common_steps"]))] = float(r["clip_score"])
    groups: dict[tuple[int, float, int], list[float]] = {}
    for (iota, b, _, _, x), s in last.items():
        groups.setdefault((iota, b, x), []).append(s)
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(OUT_COLUMNS)
    for iota, b, x in sorted(groups, key=lambda k: (-k[0], k[1], k[2])):
        w.writerow([iota, f"{b:g}", x, f"{float(np.mean(groups[(iota, b, x)])):.9f}"])
    atomic_write_text(out, text.getvalue())
    return len(groups)


def _progress(total: int, initial: int):
    try:
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc="HIQM units", unit="unit")
    except ImportError:
        class _Line:
            def __init__(self):
                self.n = initial

            def update(self, k=1):
                self.n += k
                print(f"\rHIQM units {self.n}/{total}", end="", file=sys.stderr, flush=True)

            def close(self):
                print(file=sys.stderr)

        return _Line()


def run_measurement(units: Sequence[Unit], common_steps: Sequence[int],
                    score_unit: Callable[[Unit], Sequence[float]], out: str | Path,
                    progress: bool = True) -> int:
    """Score every unit not yet in the raw file, appending as each finishes; returns units run."""
    out = Path(out)
    raw = raw_path_for(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = done_units(raw, common_steps)
    todo = [u for u in units if u.key not in done]
    bar = _progress(len(units), len(units) - len(todo)) if progress else None
    try:
        for unit in todo:
            scores = list(score_unit(unit))
            if len(scores) != len(common_steps):
                raise RuntimeError(f"scorer returned {len(scores)} scores for {len(common_steps)} common steps")
            _append_raw(raw, unit, common_steps, scores)
            aggregate(raw, out)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not todo and raw.is_file():
        aggregate(raw, out)
    return len(todo)


def live_unit_scorer(sampler, scorer, total_steps: int, common_steps: Sequence[int],
                     guidance_common: float, guidance_personal: float) -> Callable[[Unit], np.ndarray]:
    """Score one unit with the HIS sampler: one cluster, a user per common-step count (step 2-3)."""
    from quality_oracle.live.sampler import ClusterPlan, Guidance, UserPlan

    def score(unit: Unit) -> np.ndarray:
        on = bool(unit.sim_npi)
        negative = unit.pair.negative if on else ""
        guidance = Guidance(guidance_common if on else guidance_personal, guidance_personal)
        users = tuple(UserPlan(unit.pair.personal, negative, int(x), total_steps - int(x), 0)
                      for x in common_steps)
        images, _ = sampler.generate([ClusterPlan(unit.pair.public, users, seed=unit.seed)], guidance=guidance)
        return scorer.score(images[0], [unit.pair.personal] * len(users))

    return score


def refit(path: str | Path):
    """Step 4: refit the HIQM (Eq. 7) from the measured CSV."""
    try:
        from quality_oracle.hiqm import HIQMOracle
    except ImportError as err:
        raise MeasurementError(f"quality_oracle.hiqm.HIQMOracle is not available ({err}); the measurements "
                               f"are in {str(path)!r}: refit later with HIQMOracle.from_csv(path)") from err
    return HIQMOracle.from_csv(path)


# ----------------------------------------------------------------------------- CLI


def build_units(pairs_by_bin: dict[float, list[PromptPair]], seeds: Sequence[int],
                sim_npi: Sequence[int]) -> list[Unit]:
    return [Unit(iota, b, pair, int(seed)) for iota in sim_npi for b in sorted(pairs_by_bin)
            for pair in pairs_by_bin[b] for seed in seeds]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.measure_hiqm", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="diffusers pipeline folder or hub id (SD3, SD 1.x, SDXL)")
    p.add_argument("--clip", required=True, help="transformers CLIPModel folder or hub id (paper: ViT-L/14@336px)")
    p.add_argument("--out", required=True, help="aggregated CSV (sim_npi, similarity, common_steps, clip_score)")
    p.add_argument("--prompts", default=str(DEFAULT_PROMPTS),
                   help="prompts CSV (personal_prompt, negative_prompt, public_prompt)")
    p.add_argument("--pairs", help="precomputed pairs CSV (public_prompt, personal_prompt, negative_prompt, "
                                   "similarity); skips the sentence embedder")
    p.add_argument("--save-pairs", help="write the binned pairs used to this CSV")
    p.add_argument("--bins", default=",".join(f"{b:g}" for b in DEFAULT_BINS), help="similarity bin centres")
    p.add_argument("--bin-width", type=float, default=0.1)
    p.add_argument("--pairs-per-bin", type=int, default=8)
    p.add_argument("--seeds", type=int, default=4, help="seeds per pair (0 .. seeds-1, plus --seed-offset)")
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--pair-seed", type=int, default=0, help="seed of the per-bin pair draw")
    p.add_argument("--steps", type=int, default=28, help="total denoising steps T")
    p.add_argument("--max-common", type=int, help="largest common-step count (default T - 1)")
    p.add_argument("--sim-npi", choices=("both", "on", "off"), default="both")
    p.add_argument("--guidance-common", type=float, default=2.0, help="w1 with SIM on")
    p.add_argument("--guidance-personal", type=float, default=8.0, help="w2 (and w1 with SIM off)")
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-sequence-length", type=int, default=256)
    p.add_argument("--no-refit", action="store_true", help="only measure; do not refit Eq. 7")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from quality_oracle.live.oracle import (CLIP_EXPECTED, DTYPES, NO_CUDA, PIPELINE_EXPECTED, LiveOracleError,
                                            check_model_source, load_clip, load_pipeline)
    from quality_oracle.live.sampler import HISSampler

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(NO_CUDA.replace("set oracle.live.device: cpu", "pass --device cpu"))
    try:
        check_model_source("es_model", args.model, PIPELINE_EXPECTED, "model_index.json")
        check_model_source("clip_model", args.clip, CLIP_EXPECTED, "config.json")
    except LiveOracleError as err:
        message = str(err).replace("oracle.live.es_model", "--model")
        raise SystemExit(message.replace("oracle.live.clip_model", "--clip")) from err
    bins = [float(b) for b in args.bins.split(",") if b.strip()]
    if args.pairs:
        pairs = read_pairs(args.pairs)
    else:
        candidates = candidate_pairs(read_prompt_rows(args.prompts))
        sims = sentence_similarity(candidates)
        pairs = [PromptPair(pub, per, neg, float(s)) for (pub, per, neg), s in zip(candidates, sims)]
    by_bin = bin_pairs(pairs, bins, args.bin_width, args.pairs_per_bin, args.pair_seed)
    if not by_bin:
        raise SystemExit(f"no prompt pair falls into the similarity bins {bins} (+-{args.bin_width / 2:g})")
    if args.save_pairs:
        write_pairs(args.save_pairs, [p for b in sorted(by_bin) for p in by_bin[b]])
    max_common = args.steps - 1 if args.max_common is None else args.max_common
    if not 0 <= max_common < args.steps:
        raise SystemExit(f"--max-common must be in 0 .. {args.steps - 1}")
    common_steps = list(range(max_common + 1))
    sim_npi = {"both": [1, 0], "on": [1], "off": [0]}[args.sim_npi]
    seeds = [args.seed_offset + s for s in range(args.seeds)]
    units = build_units(by_bin, seeds, sim_npi)
    print(f"{len(units)} units: {sum(len(v) for v in by_bin.values())} pairs in bins "
          f"{sorted(by_bin)} x {len(seeds)} seeds x sim_npi {sim_npi}; {len(common_steps)} images each",
          file=sys.stderr)

    state: dict[str, Callable] = {}

    def score_unit(unit: Unit):  # models load on the first unit that is not done yet
        if "score" not in state:
            pipe = load_pipeline(args.model, DTYPES[args.dtype], args.device)
            sampler = HISSampler(pipe, batch_size=args.batch_size, height=args.height, width=args.width,
                                 max_sequence_length=args.max_sequence_length)
            scorer = load_clip(args.clip, args.device, args.batch_size)
            state["score"] = live_unit_scorer(sampler, scorer, args.steps, common_steps,
                                              args.guidance_common, args.guidance_personal)
        return state["score"](unit)

    ran = run_measurement(units, common_steps, score_unit, args.out, progress=not args.no_progress)
    print(f"ran {ran} units ({len(units) - ran} already done); wrote {args.out}", file=sys.stderr)
    if not args.no_refit:
        from quality_oracle.hiqm import HIQMFitError, fit_checks_markdown, fit_table_markdown

        try:
            oracle = refit(args.out)
        except HIQMFitError as err:
            print(fit_table_markdown(err.fit_table))
            print(fit_checks_markdown(err.checks))
            print(f"refit refused; the measurements stay in {args.out}: {err}", file=sys.stderr)
            return 1
        except ValueError as err:
            print(f"cannot refit Eq. 7; the measurements stay in {args.out}: {err}", file=sys.stderr)
            return 1
        print(oracle.fit_report_markdown())
        print(fit_checks_markdown(oracle.fit_checks()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
