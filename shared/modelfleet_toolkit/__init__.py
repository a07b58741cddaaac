"""modelfleet's model development toolkit: train, tune, evaluate and cross-validate models.

A separate package from the serving library: the services never import it (a test checks), so
its heavier dependencies (Optuna, scikit-learn, MLflow's tracking, matplotlib, rich) stay out of
the serving images. The CLI is ``modelfleet`` (:mod:`modelfleet_toolkit.cli`); the Python API is
:func:`modelfleet_toolkit.train.train` and :func:`modelfleet_toolkit.evaluate.evaluate_classifier`.
"""
