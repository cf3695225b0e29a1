"""Anomaly-detection methods behind one small interface (see ``base.AnomalyMethod``)."""
