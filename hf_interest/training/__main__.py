"""`python -m hf_interest.training ...` / `accelerate launch -m hf_interest.training ...`: the same as
`hub_scripts/train.py` for an installed package."""

from . import main

if __name__ == "__main__":
    main(prog="python -m hf_interest.training")
