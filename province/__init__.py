"""The reference provincial receiver: verifies, de-duplicates and stores cities' sync batches."""
