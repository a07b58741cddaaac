"""modelfleet: the serving library every fleet service imports."""

__version__ = "0.1.0"
