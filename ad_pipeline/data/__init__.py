"""Datasets: layout checks, manifests, image loading and the embedded synthetic generator."""
