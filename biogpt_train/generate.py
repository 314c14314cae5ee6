"""`python -m biogpt_train.generate task|text ...`: the command lives in biogpt_train/generation/cli.py."""

import sys

from biogpt_train.generation.cli import main

if __name__ == "__main__":
    sys.exit(main())
