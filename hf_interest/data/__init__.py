"""Behaviour data for interest models: raw logs -> per-user, time-ordered sequences as a `datasets.DatasetDict`.

```python
from hf_interest.data import load_behaviors, DataCollatorForInterest

data = load_behaviors("ratings.csv")           # or Parquet shards, JSON Lines, RecBole, MovieLens, Amazon...
print(data.report)                             # counts of every cleaning step and split
encoded, n_unknown = data.encode(tokenizer.get_vocab(), unk_id=tokenizer.unk_token_id)
collate = DataCollatorForInterest(max_length=50)
```

Modules: `readers` (formats), `columns` (column mappings), `cleaning` (cleaning, ordering, report), `splits`
(leave-one-out, temporal, by user), `vocab` (item order, encoding), `loading` (`load_behaviors`), `collator`,
`synthetic` (drifting-interest generator with ground truth), `movielens` (GroupLens layouts and MovieLens-100K),
`dispatch` (`read_log`: the reader for a format or path), `registry` (datasets by name: `load_named_dataset`).
"""

from .cleaning import CleaningConfig, CleaningStep, DataReport
from .click import DataCollatorForClick
from .collator import DataCollatorForInterest
from .columns import ColumnMapping, ItemColumns
from .dispatch import read_log
from .loading import BehaviorData, load_behaviors
from .movielens import download_movielens_100k, find_movielens_100k, movielens_100k_from_recbole_wheel, read_movielens
from .registry import NAMED_DATASETS, load_movielens_100k, load_named_dataset
from .splits import LeaveOneOutSplit, TemporalSplit, UserSplit
from .synthetic import SyntheticConfig, SyntheticInterestData, generate_synthetic_interests
from .vocab import encode_sequences, item_vocabulary

__all__ = [
    "NAMED_DATASETS",
    "BehaviorData",
    "CleaningConfig",
    "CleaningStep",
    "ColumnMapping",
    "DataCollatorForClick",
    "DataCollatorForInterest",
    "DataReport",
    "ItemColumns",
    "LeaveOneOutSplit",
    "SyntheticConfig",
    "SyntheticInterestData",
    "TemporalSplit",
    "UserSplit",
    "download_movielens_100k",
    "encode_sequences",
    "find_movielens_100k",
    "generate_synthetic_interests",
    "item_vocabulary",
    "load_behaviors",
    "load_movielens_100k",
    "load_named_dataset",
    "movielens_100k_from_recbole_wheel",
    "read_log",
    "read_movielens",
]
