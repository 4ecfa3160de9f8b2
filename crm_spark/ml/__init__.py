"""Model builders and evaluators: DataFrames in, fitted models / DataFrames / ``dict[str, float]`` out.

Nothing here reads tables or config, or talks to MLflow or Great Expectations; stages pass
settings in as keyword arguments and log what comes back.
"""
