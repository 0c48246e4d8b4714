"""Evaluate a saved next-item checkpoint on any split, beside the popularity baseline, under the stated protocol.

    python hub_scripts/evaluate.py runs/ml100k                        # the dataset the run was trained on, test split
    python hub_scripts/evaluate.py runs/ml100k --split validation
    python hub_scripts/evaluate.py ORG/NAME --dataset movielens-100k   # a Hub repo id or any folder, any dataset

The data is loaded and split exactly as training does (leave-one-out by time); items the checkpoint's
vocabulary does not know become [UNK] and are counted. The popularity baseline counts the training events of the
split. Results print as a table (seen items excluded, then included) and, with `--output_json`, are written to a file.
"""

import sys

from hf_interest_cli.commands import evaluate_main

if __name__ == "__main__":
    try:
        evaluate_main()
    except (ValueError, FileNotFoundError, OSError) as error:  # a user's mistake: one line, no traceback
        sys.exit(f"evaluate.py: error: {error}")
