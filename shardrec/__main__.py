"""`python -m shardrec ...`: the `shardrec` command, for environments where the console
script is not on PATH (a `ray job submit` shell, a bare interpreter)."""

import sys

from shardrec.launch.cli import main

sys.exit(main())
