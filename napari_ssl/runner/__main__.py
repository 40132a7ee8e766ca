"""``python -m napari_ssl.runner serve|once FOLDER [MODULE ...]``: a worker server (:mod:`napari_ssl.runner.server`).

The package is the entry point, not ``server.py`` itself: ``python -m`` on a module that the package's own import
already loaded runs a second copy of it (runpy warns about exactly that).
"""

import sys

from napari_ssl.runner.server import main

sys.exit(main())
