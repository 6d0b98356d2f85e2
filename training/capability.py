"""Why a model is skipped. Its own module so that every CLI stage can catch it without importing
the model families (LightGBM, scikit-learn, SciPy: about a second of start-up for `cdp ingest`)."""


class CapabilityOff(RuntimeError):
    """A model whose optional input tables are absent or empty: it is skipped, the message says why."""
