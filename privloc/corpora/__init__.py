"""The data: records of text with PII spans, and where they come from.

The one record format and its checks and JSONL I/O (data), the synthetic corpora in the styles of the paper's
datasets (synthetic), and the reader that finds a corpus among the synthetic ones, a folder or the hub (sources).
"""
