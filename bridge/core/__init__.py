"""Network-neutral routing between Matrix and the connectors."""
