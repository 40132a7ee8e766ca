"""The napari face of napari-ssl: the only package that imports napari, qtpy or magicgui."""
