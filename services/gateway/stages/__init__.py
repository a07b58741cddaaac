"""The gateway's pipeline stages, one job each; composed in :mod:`services.gateway.pipeline`."""
