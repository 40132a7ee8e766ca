"""What a model learned, measured: held-out pretext metrics of a pretraining checkpoint (:mod:`.score`, averaged by
:func:`napari_ssl.metrics.mean_metrics`), a pretraining network's answer on one sample for the explorer
(:mod:`.answers`), the label-efficiency study of pretrained vs scratch fine-tuning (:mod:`.evaluate`) and its report
(:mod:`.report`).

Owns the measuring; imports the training and inference stages it measures (checkpoints, tasks, fine-tuning, the
segmenter), never the GUI (no Qt, no napari). Nothing below it imports it.
"""
