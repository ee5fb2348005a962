"""Feature pipelines: point-in-time lane, carrier, seasonal, in-transit and customer features.

Small pure DataFrame-to-DataFrame functions; the same ones build training rows,
batch-scoring rows and the rows of a single HTTP request. Categorical columns stay
as strings here: turning them into codes is learned state and belongs to the model.
"""
