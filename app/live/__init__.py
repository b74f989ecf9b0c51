"""Live requests, where the model runs on demand: one module per feature, with the request
and response models and their caps in :mod:`app.live.schema`."""
