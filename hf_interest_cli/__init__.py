"""The `hf-interest` command: the command line on top of the library.

- `parsers`: every command's options and the help formatter, standard library only, so that `--help` and a mistyped
  command answer at once (no torch or transformers import: `import hf_interest` registers the model with
  transformers' Auto classes, which imports both, a few seconds);
- `commands`: what each command does, with the library; imported only to run one.

`main` is the entry point (`hf-interest`, `python -m hf_interest_cli`, `accelerate launch -m hf_interest_cli train`).
The library never imports this package (import-linter's contracts, `make test`).
"""

from __future__ import annotations

import sys

from .parsers import HelpFormatter, build_parser, evaluate_parser, push_parser


def main(argv: list[str] | None = None) -> int:
    """`hf-interest COMMAND ...`; returns the exit status (2 for a user's mistake, said in one line)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # train, evaluate and push hand every option to the library's own command lines (those of hub_scripts/).
    if argv and argv[0] in ("evaluate", "push") and any(arg in ("-h", "--help") for arg in argv[1:]):
        parsers = {"evaluate": evaluate_parser, "push": push_parser}
        parsers[argv[0]](f"hf-interest {argv[0]}").parse_args(argv[1:])  # prints the help and exits
    if argv and argv[0] in ("train", "evaluate", "push"):
        from .commands import run_script

        return run_script(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from .commands import run

    return run(args)


__all__ = ["HelpFormatter", "build_parser", "evaluate_parser", "main", "push_parser"]
