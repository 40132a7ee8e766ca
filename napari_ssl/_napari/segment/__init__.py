"""The Segment dock (:mod:`.dock`, *Plugins > napari SSL > Segment*): the model list (:mod:`.models`), what it shows
of a model (:mod:`.info`), one scan picker per model input (:mod:`.scans`) and the masks layer shown without a long
pause (:mod:`.masks`). Segments in a child process through the shared relay; never imports another dock.
"""
