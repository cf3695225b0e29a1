"""UniAD: one feature-reconstruction transformer for all categories (You et al., NeurIPS 2022).

Modules: ``config`` (params sections, pydantic only), ``features`` (aligned backbone features),
``model`` (the reconstruction transformer), ``train`` (the unified training loop over every
category), ``distributed`` (single process or a torchrun/DDP rank), ``checkpoint`` (resumable
training state), ``launch`` (torchrun relaunch), ``score`` (per-category scores), ``method``
(the per-category ``AnomalyMethod``), ``inference`` (the export graph), ``vis`` (visualisation
decoder). Nothing is re-exported here, so that importing ``config`` imports nothing else.
"""
