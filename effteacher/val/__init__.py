"""Validation: the evaluator (decode, NMS, pycocotools mAP, tables, plots) and detection metrics."""
