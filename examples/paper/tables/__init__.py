"""The tables of examples/paper/RESULTS.md, one module per protocol.

Each module's ``section(results) -> lines`` reports the JSON files of its
kind (none: no lines); ``examples.paper.summarize_results.SECTIONS`` lists
them in the report's order, and ``common`` holds what they share.
"""
