"""The results report: tables beside published numbers, ROC curves and overlay images."""
