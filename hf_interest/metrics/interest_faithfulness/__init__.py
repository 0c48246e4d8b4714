"""Folder of the `interest_faithfulness` `evaluate` metric module (load it with `evaluate.load(FAITHFULNESS_METRIC_PATH)`).

This `__init__.py` is empty on purpose: it only makes packaging tools ship the folder with `hf_interest`. Do not import
`interest_faithfulness.py` from the library; `evaluate` copies and imports it on its own.
"""
