"""From a trained segmenter to masks: load a checkpoint for inference and segment a scan on the model's grid
(:mod:`.segment`, sliding-window prediction in :mod:`.sliding`), check the scan against what the model was trained
on (:mod:`.scan_check`), and the models that ship with the package (:mod:`.bundled`).

Owns inference; imports the core below it (io, plan and preprocessing, models, the checkpoint), never the training
loop's tasks beyond what a checkpoint records, and never the GUI (no Qt, no napari). The docks, the CLI and the study
call it.
"""
