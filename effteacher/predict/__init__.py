"""Prediction: the `Detector` Python API and `effteacher predict`."""
