"""`python -m sssl_dist ...` is `sssl ...` (what `ray job submit -- python -m sssl_dist` runs)."""

import sys

from sssl_dist.cli import main

sys.exit(main())
