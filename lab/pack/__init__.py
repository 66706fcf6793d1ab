"""Packed proxies: K runs of one shape trained in one process as one stacked model.

* :mod:`lab.pack.model`: :class:`~lab.pack.model.PackedTransformer`, the stacked model (a member is
  bit for bit the solo :class:`lab.model.Transformer`);
* :mod:`lab.pack.train`: :func:`~lab.pack.train.train_pack`, the members' runs, each into its own folder;
* :mod:`lab.pack.grouping`: which runs can share a pack, and the packs of a set of runs (no torch);
* :mod:`lab.pack.launch`: a sweep's packs, planned by the driver and trained by each pack's first job.
"""
