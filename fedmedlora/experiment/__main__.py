"""`python -m fedmedlora.experiment` (the same as `fedmedlora experiment`)."""

import sys

from .cli import main

sys.exit(main())
