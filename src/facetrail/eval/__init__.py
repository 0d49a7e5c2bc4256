"""Evaluation of face verification: labelled pairs in, accuracy, ROC and a report out.

``pairs`` reads pair lists (LFW pairs.txt, CSV, or a folder per person),
``metrics`` holds the NumPy measures, ``runner`` embeds the images through a
``FaceEngine`` and scores the pairs, ``report`` writes ``roc.png`` and
``summary.json``.
"""
