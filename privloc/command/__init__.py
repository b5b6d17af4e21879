"""The `privloc` command: audit a model for PII leakage, localise its privacy neurons, and remove them.

The argument parser (cli) and the subcommands' bodies (commands); loading and checking a user's own model
and data (own); output folders claimed before any work (outputs); the audit report, its redaction of PII, and
the model card of a mitigated copy.
"""
