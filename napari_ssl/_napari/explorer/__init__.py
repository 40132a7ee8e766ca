"""The Pretext explorer dock (:mod:`.dock`, *Plugins > napari SSL > Pretext explorer*): see what each pretext does
to a scan in 2D and 3D. Its parts: the controls (:mod:`.controls`), the source layers (:mod:`.sources`), the preview
worker (:mod:`.preview`, dispatching through the registry to each pretext's own ``explore`` module or to the generic
preview of :mod:`napari_ssl.pretext._explore`), the layers it draws (:mod:`.overlays`, :mod:`.planes`, :mod:`.gallery`,
:mod:`.view` for 2D <-> 3D) and the network's answers on a preview (:mod:`.learned`, :mod:`.learned_compute`,
:mod:`.learned_draw`, which builds the napari objects a pretext's drawing describes in plain data). Imports the shared GUI pieces of
``napari_ssl._napari`` and the core below it, never another dock.
"""
