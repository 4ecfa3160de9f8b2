"""Raw sources: their columns as landed, and the typed silver schemas refine produces."""
