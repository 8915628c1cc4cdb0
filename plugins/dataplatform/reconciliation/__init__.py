"""Reconciliation: batches of financial events -> stateless reduce -> stateful artifacts, indexed by key."""
