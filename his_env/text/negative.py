"""NPI negative prompts (Sec. III-D): the core subject of a personal prompt kept, its
descriptive adjectives replaced by antonyms (WordNet 3.0, Hering's opponent colours); used with
weight 1 - w2 in Eq. (4)."""
from __future__ import annotations

import functools

from his_env.text.phrases import (DETERMINERS, article_for, descriptive_items, is_adjectival,
                                  is_adverb, is_word, join_tokens, main_entity, subject_phrase,
                                  tokenize, with_article)
from his_env.text.wordnet import lexicon

# Hering's opponent colours. WordNet gives chromatic colours no antonym of their own (their
# satellites point to "chromatic", whose antonym "achromatic" means nothing in an image
# prompt), so colour words use this table and are dropped when it has no entry.
OPPONENT_COLOURS = {"white": "black", "black": "white", "red": "green", "green": "red",
                    "blue": "yellow", "yellow": "blue"}
_MEANINGLESS_ANTONYMS = frozenset({"chromatic", "achromatic"})


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
        if is_adverb(word):
            continue
        if is_adjectival(word):
            opposite = antonym(word)
            if opposite is not None and opposite not in out:
                out.append(opposite)
                negated = True
            continue
        out.append(token)  # a noun modifier: part of what the thing is
    while out and out[-1] in (",", "and"):
        out.pop()
    return out if negated else None


def _negate_item(item: list[str]) -> list[str] | None:
    """ "a muscular build" -> ["a", "powerless", "build"]; None if nothing has an antonym."""
    determiners = [t for t in item[:1] if t.lower() in DETERMINERS]
    body = item[len(determiners):]
    words = [k for k, t in enumerate(body) if is_word(t)]
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
        return f"{article_for(main_entity(prompt))} {main_entity(prompt)}."
    determiners = tokens[:phrase.start] or ["A"]
    head_words = tokens[phrase.head:phrase.head + 1]
    modifiers = _negate_modifiers(tokens[phrase.start:phrase.head]) or [
        t for t in tokens[phrase.start:phrase.head]
        if is_word(t) and not is_adjectival(t.lower()) and not is_adverb(t.lower())]
    items: list[list[str]] = []
    if phrase.end < len(tokens) and tokens[phrase.end].lower() == "with":
        items += [negated for item in descriptive_items(tokens, phrase.end)[0]
                  if (negated := _negate_item(item)) is not None]
    for k in range(phrase.end, len(tokens)):
        if tokens[k].lower() == "its":
            for item in descriptive_items(tokens, k)[0][:1]:
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
    words = with_article(words)
    words[0] = words[0][:1].upper() + words[0][1:]
    return join_tokens(words) + "."

