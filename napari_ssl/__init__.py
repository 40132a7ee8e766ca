"""napari-ssl: see and use self-supervised pretraining (Rubik's cube, context restoration, imaging planes)
on your own 3D scans, in napari or from the command line.

Importing the package loads neither torch nor Qt: submodules are imported where they are used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
