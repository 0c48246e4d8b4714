"""The tiny models of the test suite: one configuration (`tiny_config`, the sizes a unit test can afford, overridden
where a test needs other ones) and the arguments of the tiny training runs made through the real scripts
(`tiny_train_args`, the same sizes; seconds on a CPU). A change of the configuration's contract is made here once."""

TINY = {
    "num_items": 20,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 12,
}
TEXT_ENCODER_SIZE = 12  # hidden size of the `tiny_text_encoder` fixture (conftest.py)


def tiny_config(**overrides):
    """`InterestConfig` with `TINY`'s sizes, then `overrides`."""
    from hf_interest import InterestConfig

    return InterestConfig(**{**TINY, **overrides})


def tiny_train_args(users: int = 40, batch_size: int = 16, epochs: int = 2, *extra: str) -> list[str]:
    """`train.py` arguments: synthetic data with `users` users and 30 items, a 1-layer model of width 16."""
    return [
        "--dataset", "synthetic",
        "--synthetic_num_users", str(users),
        "--synthetic_num_items", "30",
        *(f"--{name}={TINY[name]}" for name in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                "intermediate_size")),
        "--max_length", "24",
        "--per_device_train_batch_size", str(batch_size),
        "--num_train_epochs", str(epochs),
        "--report_to", "none",
        *extra,
    ]  # fmt: skip


def history_without_measurements(results: dict) -> list[dict]:
    """`eval_results.json`'s training history without what differs between identical runs (seconds, peak memory)."""
    return [
        {k: v for k, v in row.items() if not k.endswith("seconds") and not k.startswith("peak_rss")}
        for row in results["training"]["history"]
    ]
