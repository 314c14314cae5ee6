"""`python -m biogpt_train.evaluation TASK --checkpoint PATH --data FILE ...` (see cli.py)."""

import sys

from biogpt_train.evaluation.cli import main

sys.exit(main())
