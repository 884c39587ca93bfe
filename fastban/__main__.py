"""python -m fastban"""

import sys

from fastban.cli import main

sys.exit(main())
