"""What a model learned, measured: held-out pretext metrics of a pretraining checkpoint (:mod:`.score`, with
:mod:`.metrics`), the label-efficiency study of pretrained vs scratch fine-tuning (:mod:`.evaluate`) and its report
(:mod:`.report`).

Owns the measuring; imports the training and inference stages it measures (checkpoints, tasks, fine-tuning, the
segmenter), never the GUI (no Qt, no napari). Nothing below it imports it, except the native-views scoring of
:mod:`napari_ssl.pretext.planes_native`, which uses only :mod:`.metrics` (a leaf).
"""
