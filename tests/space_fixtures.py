"""A tiny run with groups, and the Gradio app on it served on 127.0.0.1: shared by the app's API and browser tests."""

import os
import shutil

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def run_with_groups(tiny_run, folder):
    """A copy of the tiny run with two user groups found on its test users (as `hf-interest groups` saves them)."""
    from hf_interest.groups import discover_groups, interest_vectors
    from hf_interest.space import SpaceBackend

    shutil.copytree(tiny_run, folder)
    backend = SpaceBackend.from_pretrained(str(folder))
    rows = backend.data.sequences["test"]
    vectors = interest_vectors(backend.model, backend.tokenizer, rows["item_ids"], rows["timestamps"])
    discover_groups(vectors, rows["user_id"], num_groups=2, seed=0).save(folder / "groups")
    return folder


def serve(backend):
    """Launches the app on 127.0.0.1 (a free port) without blocking; returns `(demo, url)`."""
    from hf_interest.space import build_demo

    demo = build_demo(backend)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    return demo, url
