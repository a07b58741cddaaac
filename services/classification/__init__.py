"""The classification service: intent recognition, sentiment, custom labels (:3004)."""
