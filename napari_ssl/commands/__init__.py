"""One module a ``napari-ssl`` command: ``add_arguments(parser)`` and ``run(args) -> int``."""
