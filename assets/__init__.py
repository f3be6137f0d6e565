"""Package data: the embedded default model (see dit_sparse.embedded); installed as ``dit_sparse.assets``."""
