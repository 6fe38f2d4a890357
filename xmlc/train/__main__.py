"""``python -m xmlc.train``: see :mod:`xmlc.train.loop`."""

import sys

from xmlc.train.loop import main

sys.exit(main())
