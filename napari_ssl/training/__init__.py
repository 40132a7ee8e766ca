"""Training: the one loop (:mod:`.trainer`: devices, precision, DDP, checkpoints, events) and its two tasks,
self-supervised pretraining (:mod:`.pretrain`) and fine-tuning a segmenter (:mod:`.finetune`), with what they need:
their configs (:mod:`.config`), the pretraining datasets (:mod:`.data`), labelled cases (:mod:`.cases`), MONAI patch
sampling and augmentation (:mod:`.augment`) and the pretrained network's loader (:mod:`.pretrained`).

Imports the stages below it (io, plan and preprocessing, pretext, models, the checkpoint, events) and never the GUI
(no Qt, no napari); the docks reach it only inside a child process, through :mod:`napari_ssl.runner`.
"""
