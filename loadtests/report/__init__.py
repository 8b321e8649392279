"""What every benchmark leaves behind (report.md, results.json, a CDF plot), written one way (writer.py)."""
