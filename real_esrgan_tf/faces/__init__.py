"""Faces: detection (RetinaFace) and parsing (ParseNet) as facexlib does them.

Modules: `detection` (`FaceDetector`, `Detections`: prior boxes, decoding, thresholds, NMS) and
`parsing` (`FaceParser`: the ParseNet input normalisation and label maps). Importing this package
imports nothing heavy; TensorFlow loads with the models.
"""
