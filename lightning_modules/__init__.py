"""LightningModules: training, evaluation and prediction steps over the plain-torch cores."""
