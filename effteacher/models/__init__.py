"""Detector models (YOLOv5 CSP-PAN, RetinaNet-style ResNet-FPN, shared head and decode), checkpoint files, pretrained weights and YOLOv5 import, post-processing (NMS)."""
