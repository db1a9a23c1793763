"""Embedding tables: configs from the data set schema, sharding plans, fused optimizers."""
