"""edge-change training: the Siamese change encoder, its export and the Python reference analysis."""
