"""The Pretext explorer dock (:mod:`.dock`, *Plugins > napari SSL > Pretext explorer*): see what each pretext does
to a scan in 2D and 3D. Its parts: the controls (:mod:`.controls`), the source layers (:mod:`.sources`), the preview
worker (:mod:`.preview`, dispatching to :mod:`.compute`, :mod:`.generic` and the planes' :mod:`.planes`), the layers
it draws (:mod:`.overlays`, :mod:`.gallery`, :mod:`.view` for 2D <-> 3D) and the network's answers on a preview
(:mod:`.learned`, :mod:`.learned_compute`, :mod:`.learned_draw`). Imports the shared GUI pieces of
``napari_ssl._napari`` and the core below it, never another dock.
"""
