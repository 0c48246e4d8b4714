"""Arguments of the tiny synthetic training runs the tests make through the real scripts (seconds on a CPU)."""

TEXT_ENCODER_SIZE = 12  # hidden size of the `tiny_text_encoder` fixture (conftest.py)


def tiny_train_args(users: int = 40, batch_size: int = 16, epochs: int = 2, *extra: str) -> list[str]:
    """`train.py` arguments: synthetic data with `users` users and 30 items, a 1-layer model of width 16."""
    return [
        "--dataset", "synthetic",
        "--synthetic_num_users", str(users),
        "--synthetic_num_items", "30",
        "--hidden_size", "16",
        "--num_hidden_layers", "1",
        "--num_attention_heads", "2",
        "--intermediate_size", "32",
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
