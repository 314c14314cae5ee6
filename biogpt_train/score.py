"""`python -m biogpt_train.score task=NAME pred=FILE gold=FILE`: the command lives in biogpt_train/scoring/cli.py."""

import sys

from biogpt_train.scoring.cli import main

if __name__ == "__main__":
    sys.exit(main())
