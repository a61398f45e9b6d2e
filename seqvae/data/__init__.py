"""Vocabulary, corpora and batching."""
