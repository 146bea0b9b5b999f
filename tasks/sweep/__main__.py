"""`python -m tasks.sweep --root ROOT --spec SPEC`: one trial in its own process (tasks.sweep.execution)."""

import sys

from tasks.sweep.trial import main

sys.exit(main())
