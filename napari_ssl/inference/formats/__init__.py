"""The model formats :mod:`napari_ssl.inference.segmenter` opens, one module each, every one declaring ``FORMAT``
(a :class:`~napari_ssl.inference.segmenter.Format`): :mod:`.native` (napari-ssl checkpoints), :mod:`.nnunet` (nnU-Net
v2 results folders, opened only when trusted), :mod:`.bundle` (MONAI bundles, opened only when trusted),
:mod:`.torchscript` (a scripted network and its sidecar). Importing a format module imports no torch; its ``open``
does."""
