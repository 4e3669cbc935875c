"""Detector models: YOLOv5 CSP-PAN family and RetinaNet-style ResNet-FPN, with a shared head and decode."""
