"""``python -m convergent`` (also what ``torchrun -m convergent`` runs)."""

import sys

from convergent.cli import main

sys.exit(main())
