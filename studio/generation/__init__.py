"""Synthetic data generation: the engine, the journal, rate limits, runs and providers."""
