"""The study behind the notebooks: the paper's figures and tables and the studies beyond it.

The cached pipeline of corpora, victims and localisations; the attack suite on its model states and the
comparison of methods at an equal budget; the held-out contexts; the injection benchmark, the objectives, the
architecture families and the pretrained model's study; and the analysis, plots, tables and "What we found"
that each notebook shows.
"""
