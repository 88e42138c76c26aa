"""``python -m kwsbench.cli``: the same command line as the ``kwsbench`` script."""

import sys

from kwsbench.cli import main

sys.exit(main())
