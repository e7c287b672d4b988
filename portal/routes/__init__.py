"""The portal's pages, one router per part (``app.create_app`` includes them all)."""
