"""Data in: the data contract, its reader and validator, the simulator and importers.

Everything downstream (features, training, serving) reads data sets only through
:func:`data.load.load_data_set`, which returns the contract's tables with normalised
types and every rejected row set aside with its reason.
"""
