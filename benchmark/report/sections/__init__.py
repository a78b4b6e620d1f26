"""The report's sections, one module each: a function of a loaded ``Snapshot`` and a ``Figures`` folder that
returns markdown, or "" to leave itself out.

Example: rnnbench report --out reports/   # benchmark.report.build.SECTIONS lists them in order
"""
