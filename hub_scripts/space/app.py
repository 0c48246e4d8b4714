"""The Gradio app of a model, run from a checkout: a user's interests over time, the recommendations and why.

    python hub_scripts/space/app.py runs/ml100k              # http://127.0.0.1:7860
    python hub_scripts/space/app.py ORG/NAME --port 7861      # a Hub repo id works too (no users to pick)

The same app as `hf-interest space RUN --serve`, and as the `app.py` that `hf-interest space --dry_run DIR` writes into
a Hugging Face Space (see `hf_interest.space`). It binds to 127.0.0.1 unless GRADIO_SERVER_NAME says otherwise.
"""

import argparse

from hf_interest.space import build_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a run folder or a Hub repo id")
    parser.add_argument("--port", type=int, default=7860, help="the port (default: 7860)")
    parser.add_argument("--trust_remote_code", action="store_true", help="only needed without hf_interest installed")
    args = parser.parse_args()
    build_demo(args.model, trust_remote_code=args.trust_remote_code or None).launch(server_port=args.port)


if __name__ == "__main__":
    main()
