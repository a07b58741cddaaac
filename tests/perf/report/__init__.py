"""``make bench-fleet``: the fleet report (measure.py runs the load, render.py draws it)."""
