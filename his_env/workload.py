"""Where the UEs' personal prompts come from at each decision point.

A `PromptPool` is an immutable set of image-generation prompts, each with a subject (the intent
group it belongs to) and its main entity (the subject noun, which the entity-based PPGFIS
baseline groups by). Pools come from

* `PromptPool.from_templates`: a deterministic generator of >= 1,000 distinct prompts over ten
  subjects, in the style of the paper's prompts ("A fluffy white cat with blue eyes sitting on a
  windowsill, bathed in golden sunlight."). Prompts of one subject share the subject noun and
  differ in mood, colour, features, action, setting and lighting, with adjectives that WordNet
  can turn into antonyms for the NPI negative prompt (Sec. III-D);
* `PromptPool.from_reference`: the prompts shipped in ``his_env/data/prompts_reference.csv``
  (the paper's SD3 experiment prompts and the inference-sharing set with LLM public prompts);
* `PromptPool.from_file`: the user's own prompts (.txt, .csv or .jsonl).

A `Workload` draws one prompt per UE each decision point the way the paper's users behave: they
fall into `num_intent_groups` (three) intent groups (Sec. VII-A), so each decision point picks
that many distinct subjects, and each UE picks one of them and a prompt of it, uniformly.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from his_env.text.phrases import main_entity

WORKLOAD_SOURCES = ("templates", "reference", "file")
REFERENCE_CSV = Path(__file__).parent / "data" / "prompts_reference.csv"
FILE_SUFFIXES = (".txt", ".csv", ".jsonl")
_PROMPT_COLUMNS = ("prompt", "personal_prompt")
_SUBJECT_COLUMNS = ("group", "subject")


# ---------------------------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PromptPool:
    """An immutable set of prompts with their subject (intent group) and main entity.

    `texts[i]` is prompt i; `subject[i]` indexes `subject_names`; `entity[i]` is its main
    subject noun; `negative[i]` / `public[i]` are reference negative / public prompts where the
    source has them (None elsewhere; the fields are None when the source has none at all).
    Sequences are tuples and arrays are read-only, so a pool can be shared freely.
    """

    texts: tuple[str, ...]
    subject: np.ndarray
    subject_names: tuple[str, ...]
    entity: tuple[str, ...]
    negative: tuple[str | None, ...] | None = None
    public: tuple[str | None, ...] | None = None
    name: str = "pool"
    _indices_by_subject: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        texts = tuple(self.texts)
        if not texts:
            raise ValueError(f"prompt pool {self.name!r} is empty")
        subject = np.array(self.subject, dtype=np.int64).reshape(-1)
        names = tuple(self.subject_names)
        if len(subject) != len(texts) or len(self.entity) != len(texts):
            raise ValueError(f"pool {self.name!r}: {len(texts)} texts but {len(subject)} subjects "
                             f"and {len(self.entity)} entities")
        if subject.min() < 0 or subject.max() >= len(names):
            raise ValueError(f"pool {self.name!r}: subject indices must lie in [0, {len(names)})")
        for label, column in (("negative", self.negative), ("public", self.public)):
            if column is not None and len(column) != len(texts):
                raise ValueError(f"pool {self.name!r}: {len(column)} {label} prompts for "
                                 f"{len(texts)} texts")
        subject.setflags(write=False)
        by_subject = []
        for s in range(len(names)):
            members = np.flatnonzero(subject == s)
            members.setflags(write=False)
            by_subject.append(members)
        set_ = object.__setattr__
        set_(self, "texts", texts)
        set_(self, "subject", subject)
        set_(self, "subject_names", names)
        set_(self, "entity", tuple(self.entity))
        if self.negative is not None:
            set_(self, "negative", tuple(self.negative))
        if self.public is not None:
            set_(self, "public", tuple(self.public))
        set_(self, "_indices_by_subject", tuple(by_subject))

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_subjects(self) -> int:
        return len(self.subject_names)

    def indices_of(self, subject: int | str) -> np.ndarray:
        """Prompt indices of one subject (by index or name), read-only."""
        if isinstance(subject, str):
            if subject not in self.subject_names:
                raise KeyError(f"no subject {subject!r} in pool {self.name!r}; it has "
                               f"{list(self.subject_names)}")
            subject = self.subject_names.index(subject)
        return self._indices_by_subject[subject]

    def select(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> "PromptPool":
        """A new pool of the prompts at `indices`; subjects without prompts are dropped."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) == 0:
            raise ValueError(f"selecting no prompts from pool {self.name!r}")
        kept_subjects, new_subject = np.unique(self.subject[indices], return_inverse=True)
        pick = lambda column: None if column is None else tuple(column[i] for i in indices)
        return PromptPool(
            texts=tuple(self.texts[i] for i in indices), subject=new_subject,
            subject_names=tuple(self.subject_names[s] for s in kept_subjects),
            entity=tuple(self.entity[i] for i in indices), negative=pick(self.negative),
            public=pick(self.public), name=name or self.name)

    def restrict_subjects(self, subjects: Iterable[str] | None) -> "PromptPool":
        """The pool restricted to the named subjects (None: unchanged)."""
        if subjects is None:
            return self
        subjects = list(subjects)
        unknown = [s for s in subjects if s not in self.subject_names]
        if unknown or not subjects:
            raise ValueError(f"unknown subjects {unknown} for pool {self.name!r}; it has "
                             f"{list(self.subject_names)}")
        keep = np.concatenate([self.indices_of(s) for s in subjects])
        return self.select(np.sort(keep))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_texts(cls, texts: Sequence[str], subjects: Sequence[str] | None = None,
                   negative: Sequence[str | None] | None = None,
                   public: Sequence[str | None] | None = None, name: str = "pool") -> "PromptPool":
        """A pool from prompt texts and optional subject labels (default: each main entity)."""
        texts = [str(t).strip() for t in texts]
        if not texts:
            raise ValueError(f"prompt pool {name!r} is empty")
        if any(not t for t in texts):
            raise ValueError(f"prompt pool {name!r} has an empty prompt")
        entity = [main_entity(t) for t in texts]
        labels = [(s or "").strip() or e for s, e in zip(subjects, entity)] if subjects else entity
        names = sorted(set(labels))
        index_of = {s: i for i, s in enumerate(names)}
        return cls(texts=tuple(texts), subject=np.array([index_of[s] for s in labels]),
                   subject_names=tuple(names), entity=tuple(entity),
                   negative=None if negative is None else tuple(n or None for n in negative),
                   public=None if public is None else tuple(p or None for p in public), name=name)

    @classmethod
    def from_templates(cls, size: int = 1200, seed: int = 0,
                       subjects: Sequence[str] | None = None) -> "PromptPool":
        """`size` distinct template prompts, spread evenly over `subjects` (None: all ten).

        Deterministic in (size, seed, subjects). Subject names are the subject nouns, which are
        also each prompt's main entity.
        """
        names = list(TEMPLATE_SUBJECTS) if subjects is None else list(subjects)
        unknown = [s for s in names if s not in TEMPLATE_SUBJECTS]
        if unknown or not names:
            raise ValueError(f"unknown template subjects {unknown}; choose among "
                             f"{list(TEMPLATE_SUBJECTS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"template subjects repeat: {names}")
        if not isinstance(size, (int, np.integer)) or size < len(names):
            raise ValueError(f"pool_size must be an integer >= the number of subjects "
                             f"({len(names)}), got {size!r}")
        rng = np.random.default_rng(seed)
        quota = np.full(len(names), size // len(names))
        quota[: size % len(names)] += 1
        texts: list[str] = []
        subject: list[int] = []
        for s, (name, count) in enumerate(zip(names, quota)):
            made = _template_prompts(name, int(count), rng)
            texts.extend(made)
            subject.extend([s] * len(made))
        return cls(texts=tuple(texts), subject=np.array(subject), subject_names=tuple(names),
                   entity=tuple(names[s] for s in subject), name=f"templates(size={size}, seed={seed})")

    @classmethod
    def from_reference(cls, path: str | Path | None = None, source: str | None = None) -> "PromptPool":
        """The shipped reference prompts (group column = subject), optionally of one `source`
        (``"his_sd3_experiment"`` or ``"inference_sharing"``)."""
        path = Path(path) if path is not None else REFERENCE_CSV
        rows = _read_csv(path)
        header = list(rows[0].keys()) if rows else []
        if "personal_prompt" not in header:
            raise ValueError(f"{str(path)!r} has no 'personal_prompt' column; columns: {header}")
        if source is not None:
            sources = sorted({r.get("source", "") for r in rows})
            rows = [r for r in rows if r.get("source") == source]
            if not rows:
                raise ValueError(f"no rows with source {source!r} in {str(path)!r}; sources: {sources}")
        return cls.from_texts(
            [r["personal_prompt"] for r in rows], subjects=[r.get("group", "") for r in rows],
            negative=[r.get("negative_prompt") for r in rows],
            public=[r.get("public_prompt") for r in rows],
            name=f"reference({source or 'all'})")

    @classmethod
    def from_file(cls, path: str | Path) -> "PromptPool":
        """The user's prompts: .txt (one per line; blank lines and '#' comments skipped), .csv
        (column ``prompt`` or ``personal_prompt``, optional ``group``/``subject``), or .jsonl
        (objects with "prompt", optional "group"/"subject"). Without a group, the subject is the
        prompt's main entity."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        if suffix not in FILE_SUFFIXES:
            raise ValueError(f"prompt file {str(path)!r}: unsupported type {suffix!r}; use one of "
                             f"{list(FILE_SUFFIXES)}")
        if suffix == ".txt":
            lines = path.read_text(encoding="utf-8").splitlines()
            texts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            groups = None
        elif suffix == ".csv":
            rows = _read_csv(path)
            header = list(rows[0].keys()) if rows else []
            texts, groups = _columns(rows, header, path)
        else:
            records = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{str(path)!r} line {number} is not valid JSON: {exc}") from exc
                if not isinstance(record, dict):
                    raise ValueError(f"{str(path)!r} line {number}: expected a JSON object, got "
                                     f"{type(record).__name__}")
                if "prompt" not in record:
                    raise ValueError(f"{str(path)!r} line {number} has no \"prompt\" key; keys: "
                                     f"{sorted(record)}")
                records.append(record)
            texts = [str(r["prompt"]) for r in records]
            has_group = any(k in r for r in records for k in _SUBJECT_COLUMNS)
            groups = ([str(r.get("group", r.get("subject", "")) or "") for r in records]
                      if has_group else None)
        if not texts:
            raise ValueError(f"prompt file {str(path)!r} holds no prompts")
        return cls.from_texts(texts, subjects=groups, name=path.name)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        if reader.fieldnames is None:
            raise ValueError(f"prompt file {str(path)!r} is empty")
        if not rows:
            raise ValueError(f"prompt file {str(path)!r} has a header but no rows")
    return rows


def _columns(rows: list[dict[str, str]], header: list[str], path: Path):
    prompt_column = next((c for c in _PROMPT_COLUMNS if c in header), None)
    if prompt_column is None:
        raise ValueError(f"{str(path)!r} has no column {' or '.join(map(repr, _PROMPT_COLUMNS))}; "
                         f"columns found: {header}")
    group_column = next((c for c in _SUBJECT_COLUMNS if c in header), None)
    texts = [(r[prompt_column] or "").strip() for r in rows]
    keep = [i for i, t in enumerate(texts) if t]
    groups = [rows[i][group_column] or "" for i in keep] if group_column else None
    return [texts[i] for i in keep], groups


# ---------------------------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------------------------
class Workload:
    """Draws the UEs' prompts of one decision point.

    Each call picks `num_intent_groups` distinct subjects uniformly (all of them when the pool
    has fewer subjects), then each UE picks one of these subjects uniformly and a prompt of that
    subject uniformly. Prompts may repeat across UEs.
    """

    def __init__(self, pool: PromptPool, num_intent_groups: int = 3):
        if not isinstance(num_intent_groups, (int, np.integer)) or num_intent_groups < 1:
            raise ValueError(f"num_intent_groups must be an integer >= 1, got {num_intent_groups!r}")
        self.pool = pool
        self.num_intent_groups = min(int(num_intent_groups), pool.num_subjects)
        groups = [pool.indices_of(s) for s in range(pool.num_subjects)]
        # Prompts sorted by subject, so a subject's prompts are prompt_order[start : start+count].
        self._prompt_order = np.concatenate(groups)
        self._subject_count = np.array([len(g) for g in groups], dtype=np.int64)
        self._subject_start = np.concatenate([[0], np.cumsum(self._subject_count)[:-1]])

    def sample(self, num_ues: int, rng: np.random.Generator) -> np.ndarray:
        """Prompt indices into the pool, one per UE, shape (num_ues,)."""
        active = self.active_subjects(rng)
        draws = rng.random((2, num_ues))
        subject = active[(draws[0] * self.num_intent_groups).astype(np.int64)]
        return self.prompts_of(subject, draws[1])

    def active_subjects(self, rng: np.random.Generator) -> np.ndarray:
        """The `num_intent_groups` distinct subjects of a decision point (of an episode, with intent
        persistence), uniformly: the k smallest of S uniform keys (all subjects when k = S, no draw)."""
        num_subjects = len(self._subject_count)
        k = self.num_intent_groups
        if k == num_subjects:
            return np.arange(num_subjects)
        return np.argpartition(rng.random(num_subjects), k - 1)[:k]

    def prompts_of(self, subject: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """A prompt of each UE's subject, uniformly, from uniforms on [0, 1) (N,): prompt indices (N,)."""
        within = (uniform * self._subject_count[subject]).astype(np.int64)
        return self._prompt_order[self._subject_start[subject] + within]

    def sample_in_groups(self, group: np.ndarray, active_subjects: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Prompt indices (N,) for UEs that keep intent groups (`his_env.dynamics.intent`): UE n draws
        a prompt of subject `active_subjects[group[n]]`, uniformly."""
        return self.prompts_of(np.asarray(active_subjects)[group], rng.random(len(group)))


def build_pool(source: str = "templates", path: str | Path | None = None, pool_size: int = 1200,
               seed: int = 0, subjects: Sequence[str] | None = None) -> PromptPool:
    """The pool the config asks for (`WorkloadConfig`: source, path, pool_size, subjects)."""
    if source == "templates":
        return PromptPool.from_templates(size=pool_size, seed=seed, subjects=subjects)
    if source == "reference":
        return PromptPool.from_reference(path).restrict_subjects(subjects)
    if source == "file":
        if path is None:
            raise ValueError("workload.source='file' needs workload.path (a .txt, .csv or .jsonl file)")
        return PromptPool.from_file(path).restrict_subjects(subjects)
    raise ValueError(f"unknown workload source {source!r}; choose one of {list(WORKLOAD_SOURCES)}")


# ---------------------------------------------------------------------------------------------
# Template vocabulary
# ---------------------------------------------------------------------------------------------
# Sentence frames; {a} is the article of the word that follows it.
_FRAMES = (
    "{a} {mood} {colour} {subject} with {feature} {action} {setting}, {lighting}.",
    "{a} {colour} {subject} with {feature}, {action} {setting}, {lighting}.",
    "{a} {mood} {colour} {subject} {action} {setting}, {lighting}.",
)

_LIGHTING = (
    "bathed in golden sunlight", "in soft morning light", "at dusk", "under a starry night sky",
    "in bright daylight", "under a cloudy sky", "at sunset", "in the gentle rain",
    "in dramatic light", "in the pale moonlight",
)

_ANIMAL_MOODS = (
    "playful", "sleepy", "curious", "proud", "graceful", "lively", "young", "old", "large",
    "small", "gentle", "bold", "friendly", "calm", "restless", "majestic",
)

# subject -> moods, colours, features ("with ..."), actions, settings
_VOCABULARY: dict[str, dict[str, tuple[str, ...]]] = {
    "cat": dict(
        mood=_ANIMAL_MOODS,
        colour=("white", "black", "gray", "orange", "brown", "cream-colored"),
        feature=("blue eyes", "green eyes", "golden eyes", "soft fur", "thick fur",
                 "long whiskers", "a fluffy tail", "short fur", "bright eyes"),
        action=("sitting", "sleeping", "resting", "stretching", "playing", "lying"),
        setting=("on a windowsill", "in a sunlit garden", "on a wooden porch", "in a cozy library",
                 "on a rooftop", "on a kitchen table", "on a soft blanket", "in a quiet alley"),
    ),
    "dog": dict(
        mood=_ANIMAL_MOODS,
        colour=("black", "white", "brown", "golden", "spotted", "gray"),
        feature=("floppy ears", "a thick coat", "a short coat", "a wagging tail", "bright eyes",
                 "a curly coat", "a shiny coat", "dark eyes", "a red collar"),
        action=("sitting", "running", "playing", "resting", "sleeping", "walking"),
        setting=("in a green meadow", "on a sandy beach", "in an autumn forest", "on a cozy couch",
                 "in a snowy field", "by a campfire", "in a flower garden", "on a city sidewalk"),
    ),
    "tiger": dict(
        mood=_ANIMAL_MOODS,
        colour=("orange", "white", "golden", "dark"),
        feature=("bold stripes", "amber eyes", "thick fur", "a long tail", "sharp claws",
                 "powerful paws", "bright eyes"),
        action=("prowling", "resting", "stalking", "lying", "walking", "drinking"),
        setting=("in a dense jungle", "by a river", "in tall grass", "under a large tree",
                 "on a rocky ledge", "in the snow", "near a waterfall", "in a misty forest"),
    ),
    "panda": dict(
        mood=_ANIMAL_MOODS,
        colour=("black-and-white", "fluffy", "chubby", "furry"),
        feature=("black patches around its eyes", "a round face", "soft fur", "thick fur",
                 "small ears", "a fluffy coat"),
        action=("munching bamboo", "sleeping", "climbing", "sitting", "rolling", "playing"),
        setting=("in a bamboo forest", "on a mossy log", "in a tall tree", "by a mountain stream",
                 "in the snow", "on a grassy hill", "in a misty valley", "among green leaves"),
    ),
    "horse": dict(
        mood=_ANIMAL_MOODS,
        colour=("white", "black", "brown", "chestnut", "gray", "dappled"),
        feature=("a long mane", "a flowing mane", "a braided mane", "a white blaze",
                 "strong legs", "a glossy coat", "a dark mane"),
        action=("galloping", "grazing", "standing", "running", "trotting", "resting"),
        setting=("in a green meadow", "across an open field", "on a sandy beach",
                 "by a wooden fence", "in a misty valley", "along a mountain trail",
                 "near a quiet stream", "in a snowy pasture"),
    ),
    "bird": dict(
        mood=_ANIMAL_MOODS,
        colour=("blue", "red", "yellow", "green", "brown", "white"),
        feature=("bright feathers", "a long tail", "a short beak", "colorful wings",
                 "soft feathers", "a curved beak"),
        action=("perched", "singing", "resting", "preening", "sitting", "hopping"),
        setting=("on a mossy branch", "on a garden fence", "in a blooming cherry tree",
                 "by a quiet pond", "on a snowy branch", "on a wooden birdhouse",
                 "in a tropical forest", "on a rusty gate"),
    ),
    "fox": dict(
        mood=_ANIMAL_MOODS,
        colour=("red", "silver", "white", "orange", "brown"),
        feature=("a bushy tail", "pointed ears", "amber eyes", "thick fur", "a white-tipped tail",
                 "bright eyes"),
        action=("trotting", "sitting", "sleeping", "hunting", "leaping", "watching"),
        setting=("through a snowy forest", "in a golden wheat field", "at the edge of a forest",
                 "on a fallen log", "in autumn leaves", "in a misty meadow", "on a rocky hill",
                 "near a frozen lake"),
    ),
    "rabbit": dict(
        mood=_ANIMAL_MOODS,
        colour=("white", "brown", "gray", "spotted", "black"),
        feature=("long ears", "floppy ears", "soft fur", "a fluffy tail", "dark eyes",
                 "white paws", "a pink nose"),
        action=("nibbling clover", "sitting", "hopping", "resting", "sniffing the air", "sleeping"),
        setting=("in a flower garden", "in a green meadow", "under a hedge", "in a vegetable patch",
                 "on a grassy hill", "in the snow", "near a wooden fence", "in a forest clearing"),
    ),
    "car": dict(
        mood=("sleek", "vintage", "new", "old", "shiny", "fast", "small", "large", "clean",
              "dusty", "elegant", "modern"),
        colour=("red", "black", "silver", "white", "yellow", "blue"),
        feature=("chrome wheels", "tinted windows", "a glossy finish", "a convertible roof",
                 "bright headlights", "racing stripes", "a matte finish"),
        action=("parked", "driving", "speeding", "waiting", "cruising"),
        setting=("on a city street", "along a coastal highway", "on a mountain road",
                 "in front of a modern building", "on a desert road", "in a rainy parking lot",
                 "on a country road", "near a busy market"),
    ),
    "castle": dict(
        mood=("ancient", "old", "massive", "small", "majestic", "quiet", "abandoned", "grand",
              "dark", "bright", "ruined", "elegant"),
        colour=("stone", "white", "gray", "red-brick", "golden"),
        feature=("tall towers", "thick stone walls", "a wide moat", "narrow windows",
                 "red banners", "a wooden drawbridge", "round turrets"),
        action=("standing", "rising", "perched", "towering"),
        setting=("on a rocky cliff", "above a misty valley", "beside a calm lake", "on a green hill",
                 "in a snowy mountain pass", "by the sea", "in a dark forest", "over a quiet village"),
    ),
}
TEMPLATE_SUBJECTS = tuple(_VOCABULARY)


def _article(word: str) -> str:
    return "An" if word[:1].lower() in "aeiou" else "A"


def _template_prompts(subject: str, count: int, rng: np.random.Generator) -> list[str]:
    """`count` distinct prompts of one subject, drawn from its vocabulary with `rng`."""
    vocab = _VOCABULARY[subject]
    slots = ("mood", "colour", "feature", "action", "setting")
    sizes = [len(_FRAMES), *(len(vocab[s]) for s in slots), len(_LIGHTING)]
    capacity = int(np.prod(sizes))
    if count > capacity // 2:
        raise ValueError(f"cannot make {count} distinct {subject!r} prompts from the templates "
                         f"(at most {capacity // 2}); lower pool_size")
    made: dict[str, None] = {}
    while len(made) < count:
        choice = [int(rng.integers(n)) for n in sizes]
        frame = _FRAMES[choice[0]]
        words = {slot: vocab[slot][i] for slot, i in zip(slots, choice[1:6])}
        words["lighting"] = _LIGHTING[choice[6]]
        first = words["mood"] if frame.startswith("{a} {mood}") else words["colour"]
        text = frame.format(a=_article(first), subject=subject, **words)
        made.setdefault(text, None)
    return list(made)
