#!/usr/bin/env bash
# Creates (or updates) .venv with the CPU build of torch and hf_interest installed in editable mode with its test and
# dev extras. Installing torch==2.13.0 first matters here: a plain `torch` requirement would resolve to a multi-GB
# CUDA build; with 2.13.0 present, the package's open `torch>=2.4` range installs nothing more.
# Override the torch line with TORCH_SPEC (e.g. TORCH_SPEC="torch" on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# pyspark (the Spark sequence-shard tests) needs a Java runtime, 17 or newer.
if ! command -v java > /dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    apt-get update -qq && apt-get install -y -qq default-jre-headless > /dev/null
  else
    echo "warning: no java on PATH; install a Java 17+ runtime for the Spark tests" >&2
  fi
fi
# The browser tests of the Gradio app (tests/test_space_browser.py) drive Debian's chromium with playwright; playwright
# never downloads a browser here.
if ! command -v chromium > /dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium > /dev/null
  else
    echo "warning: no chromium on PATH; install it for the browser tests (they fail under CI=1 without it)" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/python -c "import torch, transformers, hf_interest; print(f'torch {torch.__version__}, transformers {transformers.__version__}, hf_interest {hf_interest.__version__}')"
