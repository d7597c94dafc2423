"""HTTP endpoints served on the appservice listener beside the Matrix appservice API."""
