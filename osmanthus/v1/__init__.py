"""Generated protocol buffer modules for the osmanthus.v1 API (see scripts/gen_protos.py)."""
