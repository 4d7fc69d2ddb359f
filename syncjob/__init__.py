"""The provincial sync job: gathers list changes, grades and statistics, delivers signed batches."""
