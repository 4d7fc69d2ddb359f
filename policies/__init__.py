"""Default Cedar access policies (central and department), shipped as package data."""
