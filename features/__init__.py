"""Feature pipelines: point-in-time lane, carrier, seasonal, in-transit and customer features.

Small pure functions over columns (name -> numpy array; see ``features.pit``); the same
ones build training rows, batch-scoring rows and the rows of a single HTTP request.
Every feature is listed once in ``features.spec``. Categorical columns stay as text
here: turning them into codes is learned state and belongs to the model.
"""
