"""Maintainer tools run by the Makefile: they measure, check and publish the study's results, and change none.

The cost bench (bench and its per-attack, per-family and pretrained parts) and the peak-memory wrapper of each
notebook run; the comparison of regenerated tables with the committed ones; the dependency lock; and the
executed notebooks published for reading, as a copy and as offline HTML.
"""
