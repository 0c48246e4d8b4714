"""Publishes a training run to the Hugging Face Hub.

    python hub_scripts/push_to_hub.py RUN_DIR --repo_id ORG/NAME [--private] [--dry_run DIR]

Renders the model card from the run's `eval_results.json`, makes sure `config.json` carries `auto_map` and the code
files are present (so the model loads with `trust_remote_code=True` where hf_interest is not installed), and uploads
the model, the item vocabulary, `eval_results.json` and the card with `huggingface_hub`. Checkpoints and logs stay
behind. A peft adapter folder (`adapter_config.json`) is pushed on its own. `--dry_run DIR` writes exactly the folder
that would be uploaded, lists it, and uploads nothing.

The token comes from `hf auth login` or the `HF_TOKEN` environment variable; it is never printed or written.
Same as `hf-interest push`.
"""

from __future__ import annotations

import sys

from hf_interest_cli.commands import push_main

if __name__ == "__main__":
    try:
        push_main()
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as error:  # a user's mistake: one line
        sys.exit(f"push_to_hub.py: error: {error}")
