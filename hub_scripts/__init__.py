"""The training, evaluation, publishing and benchmark scripts, shipped as `hf_interest.hub_scripts`.

Run them from a checkout (`python hub_scripts/train.py ...`), through the CLI (`hf-interest train ...`) or as modules
(`accelerate launch -m hf_interest.hub_scripts.train ...`).
"""
