"""Web layer: HTTP in, domain calls, HTML/JSON out."""
