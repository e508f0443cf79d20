"""Generalized linear mixed models: families, the Laplace engine, the Bayesian model and the fit classes."""
