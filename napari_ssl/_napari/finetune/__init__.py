"""The Fine-tune dock (:mod:`.dock`, *Plugins > napari SSL > Fine-tune*) and what it reads from its inputs
(:mod:`.inputs`: the training pairs, the classes to learn, folder pairs). Runs fine-tuning in a child process through
the shared relay; never imports another dock (the checkpoint hub connects them).
"""
