"""`python -m hf_interest_cli`: the `hf-interest` command."""

import sys

from hf_interest_cli import main

sys.exit(main())
