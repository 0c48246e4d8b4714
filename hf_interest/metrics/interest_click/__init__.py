"""Folder of the `interest_click` `evaluate` metric module (load it with `evaluate.load(CLICK_METRIC_PATH)`).

This `__init__.py` is empty on purpose: it only makes packaging tools ship the folder with `hf_interest`. Do not import
`interest_click.py` from the library; `evaluate` copies and imports it on its own.
"""
