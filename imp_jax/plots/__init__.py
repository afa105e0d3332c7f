"""Figures: a run's, a study's, and the drawing they share."""
