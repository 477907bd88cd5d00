"""Training recipes, one module each, registered by name in `training.recipe.RECIPES`: `paper` (the paper's CNN and
autoencoder), `classifier` (the production classifier and its heads refit, with `hierarchy` for the decoding that
makes its category answers agree) and `embedder` (the retrieval embedder on the classifier's trunk)."""
