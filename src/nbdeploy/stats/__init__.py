"""Statistics of data shared by validation and monitoring (numpy, scipy and pandas only):
training-data profiles (:mod:`.profile`), drift against them (:mod:`.drift`), and always-valid
comparisons of a challenger with a champion on live data (:mod:`.sequential`).
Importing this package imports none of them; import the module you need."""
