"""Looking inside a model: the per-character trace and the `charrnn viz` page."""
