"""Views for notebooks: they mirror state computed in the core and hold no logic of their own."""
