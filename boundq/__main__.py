"""`python -m boundq ...` is the `boundq` command."""

import sys

from boundq.cli import main

sys.exit(main())
