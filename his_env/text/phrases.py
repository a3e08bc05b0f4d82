"""A shallow English phrase parser for image prompts: the subject phrase and what the prompt
says about it, by role.

* `tokenize`: words (hyphenated and apostrophe forms kept whole), numbers, punctuation;
* `subject_phrase` / `main_entity`: the subject noun phrase at the start of a prompt and its
  head noun as a WordNet lemma ("A photo of a red fox" -> "fox"); the entity-based clustering of
  the PPGFIS baseline groups users by it, and prompt pools label prompts with it;
* `prompt_parts`: a prompt taken apart into its main entity and role phrases (modifiers,
  "with" features, action, setting, scene), the material public prompts are made of;
* word-class tests over WordNet (`is_adjectival`, `is_nominal`, ...) and small helpers shared by
  the NPI negative prompts and the public-prompt generator.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from his_env.text.wordnet import lexicon

_TOKEN = re.compile(r"[A-Za-z]+(?:['\u2019-][A-Za-z]+)*|\d+(?:\.\d+)?|[^\w\s]")
DETERMINERS = frozenset(
    "a an the one two three four five six seven eight nine ten several some many few this that "
    "these those my your his her our their each every another".split())
FUNCTION_WORDS = frozenset(
    "with on in at by under over near beside behind above below across along through into onto "
    "from to of for among around against between during inside outside toward towards upon within "
    "without beneath beyond past amid atop like and or but while as that which who whom whose "
    "where when is are was were be being been has have had does do did can will would could "
    "should may might must it its itself they them he she him her their there here not very".split())
_FRAME_NOUNS = frozenset(
    "photo photograph picture image painting portrait illustration drawing sketch render "
    "rendering close-up closeup shot view scene group pair couple family herd flock pack "
    "pride troop".split())


def tokenize(text: str) -> list[str]:
    """Words (hyphenated and apostrophe forms kept whole), numbers and punctuation marks."""
    return _TOKEN.findall(text)


def is_word(token: str) -> bool:
    return token[:1].isalpha()


def is_participle(word: str) -> bool:
    return (word.endswith("ing") or word.endswith("ed")) and lexicon().is_pos(word, "v")


def is_adjectival(word: str) -> bool:
    return "-" in word or lexicon().is_pos(word, "a") or is_participle(word)


def is_nominal(word: str) -> bool:
    """A noun in WordNet, or a word WordNet does not know (names, rare nouns)."""
    lex = lexicon()
    return lex.is_pos(word, "n") or not any(lex.is_pos(word, p) for p in "var")


def is_adverb(word: str) -> bool:
    lex = lexicon()
    return word.endswith("ly") and lex.is_pos(word, "r") and not lex.is_pos(word, "a")


def _is_plural_noun(word: str) -> bool:
    bases = lexicon().base_forms(word, "n")
    return bool(bases) and word not in bases


def is_verb_after(word: str, head: str) -> bool:
    """Whether `word`, right after the noun `head`, is a verb: a participle, a 3rd-person
    singular after a singular noun ("dog sleeps"), or any verb after a plural noun."""
    if is_participle(word):
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
        return low if is_word(token) else None
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
    while i < n and tokens[i].lower() in DETERMINERS:
        i += 1
    start, head = i, None
    while i < n:
        token = tokens[i]
        word = token.lower()
        if not is_word(token):
            if token == "," and head is None:
                i += 1
                continue
            break
        if word in FUNCTION_WORDS:
            if word == "and" and head is None:
                i += 1
                continue
            if word == "of" and head is not None and tokens[head].lower() in _FRAME_NOUNS:
                i += 1  # "A photo of a cat": the entity is what the photo shows
                while i < n and tokens[i].lower() in DETERMINERS:
                    i += 1
                start, head = i, None
                continue
            break
        if head is None:
            following = _next_word(tokens, i)
            continues = following is not None and following not in FUNCTION_WORDS and (
                is_adjectival(following) or is_nominal(following))
            if is_adverb(word) or (is_adjectival(word) and continues):
                pass  # a modifier
            elif is_nominal(word):
                head = i
            # else: an adjective or verb form with no noun after it; keep looking
        else:
            if is_verb_after(word, tokens[head].lower()) or not is_nominal(word):
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
        words = [t.lower() for t in tokens if is_word(t)]
        return words[0] if words else prompt.strip().lower()
    word = tokens[phrase.head].lower()
    bases = lexicon().base_forms(word, "n")
    return bases[0] if bases else word


def with_article(words: list[str]) -> list[str]:
    """Fix "a"/"an" before the word that follows it."""
    fixed = list(words)
    for k, word in enumerate(fixed[:-1]):
        if word.lower() in ("a", "an"):
            article = "an" if fixed[k + 1][:1].lower() in "aeiou" else "a"
            fixed[k] = article.capitalize() if word[:1].isupper() else article
    return fixed


def join_tokens(tokens: list[str]) -> str:
    """Tokens joined by spaces, without a space before punctuation."""
    text = " ".join(tokens)
    return re.sub(r" ([,.;:!?])", r"\1", text)


def descriptive_items(tokens: list[str], start: int) -> tuple[list[list[str]], int]:
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
                          if is_word(t) and t.lower() not in DETERMINERS), None)
        if token == ",":
            following = tokens[i + 1].lower() if i + 1 < len(tokens) else ""
            if following in DETERMINERS:
                items.append([])
            elif not following or not is_word(following) or following in FUNCTION_WORDS or (
                    is_participle(following)) or (last_word and is_nominal(last_word)
                                                   and not is_adjectival(last_word)):
                break
            else:
                item.append(token)
        elif word == "and":
            items.append([])
        elif not is_word(token) or word in FUNCTION_WORDS:
            break
        elif last_word is not None and is_nominal(last_word) and not is_adjectival(last_word) and (
                is_verb_after(word, last_word) or not is_nominal(word)):
            break
        elif item and is_participle(word) and last_word and is_nominal(last_word):
            break
        else:
            item.append(token)
        i += 1
    return [item for item in items if item], i


def article_for(word: str) -> str:
    """"A" or "An" before `word`."""
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
                      if is_word(w) and w != "and" and not is_adverb(w) and is_adjectival(w))
    i = phrase.end
    features: tuple[str, ...] = ()
    if i < len(tokens) and lower[i] == "with":
        items, i = descriptive_items(tokens, i)
        features = tuple(join_tokens([t.lower() for t in item]) for item in items)
    # The rest, as comma-separated segments.
    segments: list[list[str]] = [[]]
    for word in lower[i:]:
        if word in (",", ".", ";", ":", "!", "?"):
            segments.append([])
        elif is_word(word):
            segments[-1].append(word)
    action, setting, scene = [], [], []
    for segment in filter(None, segments):
        words = segment
        if not action and not setting and (
                words[0] in _AUXILIARIES or is_participle(words[0])
                or is_verb_after(words[0], entity) or words[0] in _PREPOSITIONS):
            while words and words[0] in _AUXILIARIES:
                words = words[1:]
            cut = next((k for k, w in enumerate(words) if w in _PREPOSITIONS), len(words))
            end = next((k for k, w in enumerate(words) if k > cut and w in _CLAUSE_WORDS), len(words))
            verb_group = words[:cut]
            if verb_group and not is_participle(verb_group[0]):
                verb_group = [_participle(verb_group[0])] + verb_group[1:]
            if verb_group:
                action.append(" ".join(verb_group))
            setting.extend(_prepositional_phrases(words[cut:end]))
        else:
            scene.append(" ".join(words))
    return PromptParts(entity=entity, modifier=modifiers, feature=features, action=tuple(action),
                       setting=tuple(setting), scene=tuple(scene))

