"""`python -m biogpt_train.convert SRC DST`: the command lives in biogpt_train/checkpoint/convert.py."""

import sys

from biogpt_train.checkpoint.convert import main

if __name__ == "__main__":
    sys.exit(main())
