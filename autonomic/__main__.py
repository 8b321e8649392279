"""`python -m autonomic` is the same as the `autonomic` command."""

import sys

from autonomic.cli import main

sys.exit(main())
