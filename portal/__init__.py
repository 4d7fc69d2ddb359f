"""The subjects' portal: kiosk and online self-service (issue 15)."""
