"""The Pretrain dock (:mod:`.dock`, *Plugins > napari SSL > Pretrain*): its form of run settings (:mod:`.form`) and a
probe of the event loop's responsiveness for the benchmarks (:mod:`.probe`). Runs pretraining in a child process
through the shared relay; never imports another dock (the checkpoint hub connects them).
"""
