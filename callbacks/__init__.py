"""Callbacks: side effects such as heatmaps, reports and file writers."""
