"""`python -m mammoseg ...` (also what `torchrun -m mammoseg train ...` runs)."""

import sys

from mammoseg.cli import main

sys.exit(main())
